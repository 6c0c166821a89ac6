//! Pure logic without IO: which Graph notification items are accepted, and what a queue job says.
//! Nothing here talks to Graph, storage or the clock: callers pass the time in.

pub(crate) mod job;
pub(crate) mod notification;
