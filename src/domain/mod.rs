//! Pure logic without IO: which Graph notification items are accepted, what a queue job says, how a
//! call record becomes rows, and when a failed fetch is tried again. Nothing here talks to Graph,
//! storage or the clock: callers pass the time in. It imports nothing of the crate's edges (`graph`,
//! `store`, `functions`, `app`): they import it. The typed views of Graph's call-record payloads
//! (`models`) live here because only the domain reads them; `graph` hands over bytes.

pub(crate) mod callrecord;
pub(crate) mod directory;
pub(crate) mod event;
pub(crate) mod fetch;
pub(crate) mod health;
pub(crate) mod job;
pub(crate) mod models;
pub(crate) mod notification;
pub(crate) mod outcome;
pub(crate) mod reports;
pub(crate) mod schedule;
pub(crate) mod secret;
pub(crate) mod subscription;
pub(crate) mod write;
