//! One Azure Table, through our own small client on the storage SDK's HTTP pipeline: entities with
//! typed properties, point reads and writes with optimistic concurrency, paged queries, and
//! entity-group transactions.
//!
//! The 1.x Azure SDK for Rust has no table crate, so the REST calls are made here, through the same
//! `azure_core` pipeline (transport, retries, SAS or bearer-token authentication) an SDK queue
//! client uses ([`crate::pipeline`]). What this module owns: the Table service's wire format
//! ([`entity`]), its limits (checked before anything is sent), `$filter` literals ([`filter`]) and
//! `$batch` ([`batch`]). It must not know what its callers store in their tables.
//!
//! REST reference: <https://learn.microsoft.com/rest/api/storageservices/table-service-rest-api>.
//! Requests name service version [`SERVICE_VERSION`], the newest of the Table service, which bearer
//! tokens require.

mod batch;
pub(crate) mod entity;
pub mod filter;

use std::sync::Arc;

use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::{Context, Method, Pipeline, PipelineSendOptions, RawResponse, Request, Url};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use tracing::instrument;

use crate::auth::StorageAuth;
use crate::error::{SdkFailure, StoreError};
use crate::pipeline::{StorageRetry, pipeline};
use entity::{ETag, Entity};

/// The `x-ms-version` of every request.
const SERVICE_VERSION: &str = "2019-02-02";
/// JSON with just enough metadata: type annotations for values plain JSON cannot tell apart
/// (Int64, DateTime, Binary, Guid), and `odata.etag`.
const ACCEPT_JSON: &str = "application/json;odata=minimalmetadata";
/// The most entities one query page holds: the service returns no more, whatever `$top` asks for,
/// and [`Query::top`] accepts no more.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The most operations one entity-group transaction ([`TableStore::batch`]) may hold.
pub const MAX_BATCH_OPERATIONS: usize = 100;

/// Every byte but the unreserved characters of RFC 3986 (`A–Z a–z 0–9 - . _ ~`) is percent-encoded,
/// in keys and in query values alike.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const CONTINUATION_PK: HeaderName = HeaderName::from_static("x-ms-continuation-nextpartitionkey");
const CONTINUATION_RK: HeaderName = HeaderName::from_static("x-ms-continuation-nextrowkey");
const ETAG: HeaderName = HeaderName::from_static("etag");
const ERROR_CODE: HeaderName = HeaderName::from_static("x-ms-error-code");
const CONTENT_TYPE: HeaderName = HeaderName::from_static("content-type");

/// How a write treats the properties an existing entity has and the written one lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The entity becomes exactly what was written.
    Replace,
    /// Written properties are set; the others keep their values.
    Merge,
}

/// One operation of an entity-group transaction ([`TableStore::batch`]).
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// Insert; the batch fails with [`crate::BatchFailure::Conflict`] if it exists.
    Insert(Entity),
    /// Insert or replace/merge, whatever exists.
    Upsert(Entity, WriteMode),
    /// Replace/merge the entity only if its ETag matches ([`ETag::any`]: only if it exists).
    Update(Entity, WriteMode, ETag),
    /// Delete the entity with this row key (in the batch's partition), if its ETag matches
    /// (`None`: whatever its version). Unlike [`TableStore::delete`], a missing entity fails the batch.
    Delete { rk: String, if_match: Option<ETag> },
}

impl BatchOp {
    fn row_key(&self) -> &str {
        match self {
            Self::Insert(e) | Self::Upsert(e, _) | Self::Update(e, _, _) => &e.row_key,
            Self::Delete { rk, .. } => rk,
        }
    }
}

/// Where the next page of a query starts (the service's `NextPartitionKey`/`NextRowKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    pub next_partition_key: String,
    pub next_row_key: Option<String>,
}

/// A query: which entities (`$filter`), which properties (`$select`), how many a page (`$top`) and
/// where to continue. Build with [`Query::new`] and the methods below.
#[derive(Debug, Clone, Default)]
pub struct Query {
    filter: Option<String>,
    select: Option<Vec<String>>,
    top: Option<u32>,
    continuation: Option<Continuation>,
}

impl Query {
    /// Every entity of the table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only entities matching `filter`; build it with [`filter`] so literals are escaped.
    #[must_use]
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Only these properties (plus the keys, always selected, so results stay addressable).
    #[must_use]
    pub fn select<I, S>(mut self, properties: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.select = Some(properties.into_iter().map(Into::into).collect());
        self
    }

    /// At most `n` (1 to 1,000) entities a page. [`TableStore::query_all`] still reads every page.
    #[must_use]
    pub fn top(mut self, n: u32) -> Self {
        self.top = Some(n);
        self
    }

    /// Continue where a previous page ended.
    #[must_use]
    pub fn continuation(mut self, continuation: Option<Continuation>) -> Self {
        self.continuation = continuation;
        self
    }

    /// The query string (`$filter=…&$select=…`), every value percent-encoded.
    fn query_string(&self) -> Result<String, StoreError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(filter) = &self.filter {
            params.push(("$filter", filter.clone()));
        }
        if let Some(select) = &self.select {
            let mut names: Vec<&str> = vec!["PartitionKey", "RowKey"];
            names.extend(
                select
                    .iter()
                    .map(String::as_str)
                    .filter(|n| !matches!(*n, "PartitionKey" | "RowKey")),
            );
            params.push(("$select", names.join(",")));
        }
        if let Some(top) = self.top {
            if !(1..=MAX_PAGE_SIZE).contains(&top) {
                return Err(StoreError::invalid(format!(
                    "$top is {top}; it must be 1 to {MAX_PAGE_SIZE}"
                )));
            }
            params.push(("$top", top.to_string()));
        }
        if let Some(c) = &self.continuation {
            params.push(("NextPartitionKey", c.next_partition_key.clone()));
            if let Some(rk) = &c.next_row_key {
                params.push(("NextRowKey", rk.clone()));
            }
        }
        Ok(params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&"))
    }
}

/// One page of query results.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub entities: Vec<Entity>,
    /// Where the next page starts; `None` on the last page. A page may be empty and still have one.
    pub continuation: Option<Continuation>,
}

/// A handle on one table. Cheap to clone.
#[derive(Clone)]
pub struct TableStore {
    inner: Arc<Inner>,
}

struct Inner {
    pipeline: Pipeline,
    urls: Urls,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableStore")
            .field("name", &self.inner.urls.table)
            .finish_non_exhaustive()
    }
}

impl TableStore {
    /// A client for table `table` of the table service at `endpoint` (for Azurite the account is
    /// part of the path: `http://127.0.0.1:10002/devstoreaccount1`).
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a table name the service would refuse (3–63 letters and
    /// digits, starting with a letter); [`StoreError::Fatal`] for a bearer token over `http://`.
    pub fn new(
        endpoint: &Url,
        table: &str,
        auth: &StorageAuth,
        http: reqwest::Client,
        retry: StorageRetry,
    ) -> Result<Self, StoreError> {
        validate_table_name(table)?;
        let mut base = endpoint.clone();
        base.set_query(None);
        base.set_fragment(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let pipeline = pipeline(&base, auth, http, retry)?;
        Ok(Self {
            inner: Arc::new(Inner {
                pipeline,
                urls: Urls::new(base.as_str(), table),
            }),
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.inner.urls.table
    }

    /// Creates the table if it does not exist.
    ///
    /// # Errors
    /// [`StoreError`] when storage cannot be reached or refuses (e.g. a SAS without create rights);
    /// [`StoreError::Conflict`] while a table of this name is being deleted.
    #[instrument(skip_all, fields(table = %self.name()), err(level = "debug"))]
    pub async fn ensure_exists(&self) -> Result<(), StoreError> {
        let mut request = self.request(Method::Post, &self.inner.urls.tables())?;
        let body = serde_json::json!({ "TableName": self.name() });
        set_json(&mut request, body.to_string().into_bytes());
        request.insert_header("prefer", "return-no-content");
        let response = self.send(request).await?;
        match u16::from(response.status()) {
            200..=299 => Ok(()),
            409 if response_error_code(&response).as_deref() == Some("TableAlreadyExists") => {
                Ok(())
            }
            _ => Err(status_error(&response)),
        }
    }

    /// The entity with these keys, or `None` if there is none.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for an invalid key; [`StoreError::NotFound`] when the *table*
    /// does not exist (so a misnamed table is not mistaken for an empty one); other [`StoreError`]s.
    #[instrument(skip_all, fields(table = %self.name()), err(level = "debug"))]
    pub async fn get(&self, pk: &str, rk: &str) -> Result<Option<Entity>, StoreError> {
        entity::validate_key("PartitionKey", pk)?;
        entity::validate_key("RowKey", rk)?;
        let request = self.request(Method::Get, &self.inner.urls.entity(pk, rk))?;
        let response = self.send(request).await?;
        match u16::from(response.status()) {
            200 => {
                let json: Value = parse_json(&response)?;
                let object = json
                    .as_object()
                    .ok_or_else(|| StoreError::fatal("an entity response is not a JSON object"))?;
                let mut entity = Entity::from_json(object)?;
                if entity.etag.is_none() {
                    entity.etag = etag_header(response.headers());
                }
                Ok(Some(entity))
            }
            404 if !is_table_not_found(&response) => Ok(None),
            _ => Err(status_error(&response)),
        }
    }

    /// Inserts a new entity and returns its ETag.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if an entity with these keys exists; [`StoreError::InvalidInput`]
    /// for an entity breaking the service's limits (nothing is sent); other [`StoreError`]s.
    #[instrument(skip_all, fields(table = %self.name()), err(level = "debug"))]
    pub async fn insert(&self, e: &Entity) -> Result<ETag, StoreError> {
        e.validate()?;
        let mut request = self.request(Method::Post, &self.inner.urls.table())?;
        set_json(&mut request, entity_body(e));
        request.insert_header("prefer", "return-no-content");
        self.write(request).await
    }

    /// Inserts the entity, or replaces or merges (per `mode`) the one with its keys; returns the
    /// new ETag.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for an entity breaking the service's limits; other [`StoreError`]s.
    #[instrument(skip_all, fields(table = %self.name()), err(level = "debug"))]
    pub async fn upsert(&self, e: &Entity, mode: WriteMode) -> Result<ETag, StoreError> {
        e.validate()?;
        let mut request = self.request(
            write_method(mode),
            &self.inner.urls.entity(&e.partition_key, &e.row_key),
        )?;
        set_json(&mut request, entity_body(e));
        self.write(request).await
    }

    /// Replaces or merges (per `mode`) the existing entity if its ETag is still `if_match`
    /// ([`ETag::any`] for any version); returns the new ETag.
    ///
    /// # Errors
    /// [`StoreError::PreconditionFailed`] if the entity changed since `if_match` was read;
    /// [`StoreError::NotFound`] if it does not exist; [`StoreError::InvalidInput`]; other [`StoreError`]s.
    #[instrument(skip_all, fields(table = %self.name()), err(level = "debug"))]
    pub async fn update(
        &self,
        e: &Entity,
        mode: WriteMode,
        if_match: &ETag,
    ) -> Result<ETag, StoreError> {
        e.validate()?;
        let mut request = self.request(
            write_method(mode),
            &self.inner.urls.entity(&e.partition_key, &e.row_key),
        )?;
        set_json(&mut request, entity_body(e));
        request.insert_header("if-match", if_match.as_str().to_owned());
        self.write(request).await
    }

    /// Deletes the entity if its ETag is `if_match` (`None`: whatever its version). `Ok(false)`
    /// when there was no such entity, so deleting twice is not an error.
    ///
    /// # Errors
    /// [`StoreError::PreconditionFailed`] if the entity changed since `if_match` was read;
    /// [`StoreError::NotFound`] when the *table* does not exist; other [`StoreError`]s.
    #[instrument(skip_all, fields(table = %self.name()), err(level = "debug"))]
    pub async fn delete(
        &self,
        pk: &str,
        rk: &str,
        if_match: Option<&ETag>,
    ) -> Result<bool, StoreError> {
        entity::validate_key("PartitionKey", pk)?;
        entity::validate_key("RowKey", rk)?;
        let mut request = self.request(Method::Delete, &self.inner.urls.entity(pk, rk))?;
        request.insert_header("if-match", if_match.map_or("*", ETag::as_str).to_owned());
        let response = self.send(request).await?;
        match u16::from(response.status()) {
            200..=299 => Ok(true),
            404 if !is_table_not_found(&response) => Ok(false),
            _ => Err(status_error(&response)),
        }
    }

    /// One page of entities matching `q`, and where the next page starts.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for `$top` outside 1..=1000; [`StoreError::NotFound`] when the
    /// table does not exist; [`StoreError::Fatal`] for a filter the service cannot parse; others.
    #[instrument(skip_all, fields(table = %self.name()), err(level = "debug"))]
    pub async fn query(&self, q: &Query) -> Result<Page, StoreError> {
        let query = q.query_string()?;
        let mut url = self.inner.urls.query();
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        let request = self.request(Method::Get, &url)?;
        let response = self.send(request).await?;
        if u16::from(response.status()) != 200 {
            return Err(status_error(&response));
        }
        let json: Value = parse_json(&response)?;
        let entities = json
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| StoreError::fatal("a query response has no `value` array"))?
            .iter()
            .map(|item| {
                item.as_object()
                    .ok_or_else(|| StoreError::fatal("a queried entity is not a JSON object"))
                    .and_then(Entity::from_json)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            entities,
            continuation: continuation_from(response.headers()),
        })
    }

    /// Every entity matching `q`, following continuations from `q`'s own (if any) to the end.
    ///
    /// # Errors
    /// As [`TableStore::query`]; [`StoreError::Fatal`] if the service repeats a continuation.
    #[instrument(skip_all, fields(table = %self.name()), err(level = "debug"))]
    pub async fn query_all(&self, q: &Query) -> Result<Vec<Entity>, StoreError> {
        let mut entities = Vec::new();
        let mut query = q.clone();
        loop {
            let page = self.query(&query).await?;
            entities.extend(page.entities);
            match page.continuation {
                None => return Ok(entities),
                Some(next) if query.continuation.as_ref() == Some(&next) => {
                    return Err(StoreError::fatal(
                        "the table service repeated a continuation",
                    ));
                }
                Some(next) => query.continuation = Some(next),
            }
        }
    }

    /// Runs `ops` on partition `pk` as one entity-group transaction: all succeed or none does.
    /// Returns each operation's new ETag (`None` for deletes), in order. An empty batch sends
    /// nothing.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] (nothing sent) for more than 100 operations, an entity of
    /// another partition, two operations on one row key, an invalid entity or a body over 4 MiB;
    /// [`StoreError::BatchFailed`] naming the operation the service refused and why (nothing was
    /// written); other [`StoreError`]s.
    #[instrument(skip_all, fields(table = %self.name(), ops = ops.len()), err(level = "debug"))]
    pub async fn batch(
        &self,
        pk: &str,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<Option<ETag>>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        validate_batch(pk, &ops)?;
        let built = batch::build(&self.inner.urls, pk, &ops);
        if built.body.len() > batch::MAX_BODY_BYTES {
            return Err(StoreError::invalid(format!(
                "the batch body takes {} bytes; at most {} (4 MiB) are allowed",
                built.body.len(),
                batch::MAX_BODY_BYTES
            )));
        }
        let mut request = self.request(Method::Post, &self.inner.urls.batch())?;
        request.insert_header("content-type", built.content_type);
        request.set_body(built.body);
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(status_error(&response));
        }
        let content_type = response
            .headers()
            .get_optional_str(&CONTENT_TYPE)
            .unwrap_or_default()
            .to_owned();
        let body = std::str::from_utf8(response.body().as_ref())
            .map_err(|_| StoreError::fatal("a $batch response is not UTF-8"))?;
        batch::parse_response(&content_type, body, &ops)
    }

    /// A request with the headers every Table operation needs.
    fn request(&self, method: Method, url: &str) -> Result<Request, StoreError> {
        // The URL carries no SAS yet (the pipeline adds it), but keep parse errors generic anyway.
        let url = Url::parse(url).map_err(|e| StoreError::fatal(format!("table URL: {e}")))?;
        let mut request = Request::new(url, method);
        request.insert_header("x-ms-version", SERVICE_VERSION);
        // RFC 1123 in GMT (`Sun, 06 Nov 1994 08:49:37 GMT`), as `x-ms-date` wants it.
        request.insert_header(
            "x-ms-date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        request.insert_header("dataserviceversion", "3.0");
        request.insert_header("maxdataserviceversion", "3.0;NetFx");
        request.insert_header("accept", ACCEPT_JSON);
        Ok(request)
    }

    /// Sends through the pipeline (which retries transient failures), returning every HTTP
    /// response for the caller to judge; only transport failures are errors here.
    async fn send(&self, mut request: Request) -> Result<RawResponse, StoreError> {
        let options = PipelineSendOptions {
            skip_checks: true,
            ..Default::default()
        };
        self.inner
            .pipeline
            .send(&Context::new(), &mut request, Some(options))
            .await
            .map_err(StoreError::from_sdk)
    }

    /// Sends a write answered with `204 No Content` and the new ETag.
    async fn write(&self, request: Request) -> Result<ETag, StoreError> {
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(status_error(&response));
        }
        etag_header(response.headers())
            .ok_or_else(|| StoreError::fatal("a write response has no ETag"))
    }
}

/// The URLs of one table's operations, as text (keys percent-encoded by us, so that the `url`
/// crate leaves them alone).
struct Urls {
    /// The service endpoint, ending in `/`.
    base: String,
    table: String,
}

impl Urls {
    fn new(base: &str, table: &str) -> Self {
        Self {
            base: base.to_owned(),
            table: table.to_owned(),
        }
    }

    fn tables(&self) -> String {
        format!("{}Tables", self.base)
    }

    fn batch(&self) -> String {
        format!("{}$batch", self.base)
    }

    fn table(&self) -> String {
        format!("{}{}", self.base, self.table)
    }

    fn query(&self) -> String {
        format!("{}{}()", self.base, self.table)
    }

    /// `Table(PartitionKey='…',RowKey='…')`: quotes doubled (OData string literals), then
    /// percent-encoded.
    fn entity(&self, pk: &str, rk: &str) -> String {
        let key = |k: &str| percent_encode(&k.replace('\'', "''"));
        format!(
            "{}{}(PartitionKey='{}',RowKey='{}')",
            self.base,
            self.table,
            key(pk),
            key(rk)
        )
    }
}

/// Percent-encodes every byte but the unreserved characters of RFC 3986.
fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// Table names: 3–63 ASCII letters and digits, starting with a letter; `tables` is reserved.
fn validate_table_name(name: &str) -> Result<(), StoreError> {
    let valid = (3..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && !name.eq_ignore_ascii_case("tables");
    if valid {
        Ok(())
    } else {
        Err(StoreError::invalid(format!(
            "table name `{}` must be 3 to 63 letters and digits, start with a letter and not be `tables`",
            name.escape_debug()
        )))
    }
}

fn validate_batch(pk: &str, ops: &[BatchOp]) -> Result<(), StoreError> {
    if ops.len() > MAX_BATCH_OPERATIONS {
        return Err(StoreError::invalid(format!(
            "the batch has {} operations; at most {MAX_BATCH_OPERATIONS} are allowed",
            ops.len(),
        )));
    }
    entity::validate_key("PartitionKey", pk)?;
    let mut row_keys = std::collections::HashSet::new();
    for (index, op) in ops.iter().enumerate() {
        match op {
            BatchOp::Insert(e) | BatchOp::Upsert(e, _) | BatchOp::Update(e, _, _) => {
                if e.partition_key != pk {
                    return Err(StoreError::invalid(format!(
                        "batch operation {index} is for another partition than the batch's"
                    )));
                }
                e.validate()
                    .map_err(|err| prefix_invalid(err, &format!("batch operation {index}")))?;
            }
            BatchOp::Delete { rk, .. } => entity::validate_key("RowKey", rk)
                .map_err(|err| prefix_invalid(err, &format!("batch operation {index}")))?,
        }
        if !row_keys.insert(op.row_key()) {
            return Err(StoreError::invalid(format!(
                "batch operation {index} is for a row key an earlier operation already uses"
            )));
        }
    }
    Ok(())
}

fn prefix_invalid(err: StoreError, prefix: &str) -> StoreError {
    match err {
        StoreError::InvalidInput(why) => StoreError::InvalidInput(format!("{prefix}: {why}")),
        other => other,
    }
}

fn write_method(mode: WriteMode) -> Method {
    match mode {
        WriteMode::Replace => Method::Put,
        // The service documents MERGE and accepts PATCH for it; HTTP clients only know PATCH.
        WriteMode::Merge => Method::Patch,
    }
}

fn entity_body(e: &Entity) -> Vec<u8> {
    Value::Object(e.to_json()).to_string().into_bytes()
}

fn set_json(request: &mut Request, body: Vec<u8>) {
    request.insert_header("content-type", "application/json");
    request.set_body(body);
}

fn parse_json(response: &RawResponse) -> Result<Value, StoreError> {
    serde_json::from_slice(response.body().as_ref())
        .map_err(|e| StoreError::fatal(format!("a table response is not JSON: {e}")))
}

fn etag_header(headers: &Headers) -> Option<ETag> {
    headers.get_optional_str(&ETAG).map(ETag::new)
}

fn continuation_from(headers: &Headers) -> Option<Continuation> {
    let next_partition_key = headers.get_optional_string(&CONTINUATION_PK)?;
    Some(Continuation {
        next_partition_key,
        next_row_key: headers.get_optional_string(&CONTINUATION_RK),
    })
}

/// The storage error code (`EntityAlreadyExists`, …) from the header or the OData error body.
/// Only a plain identifier is kept: error text stays free of anything the request carried.
fn error_code(header: Option<&str>, body: Option<&Value>) -> Option<String> {
    header
        .or_else(|| {
            body.and_then(|b| b.pointer("/odata.error/code"))
                .and_then(Value::as_str)
        })
        .filter(|c| c.len() <= 100 && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .map(str::to_owned)
}

fn response_error_code(response: &RawResponse) -> Option<String> {
    let body = serde_json::from_slice::<Value>(response.body().as_ref()).ok();
    error_code(
        response.headers().get_optional_str(&ERROR_CODE),
        body.as_ref(),
    )
}

/// A 404 about the table rather than the entity.
fn is_table_not_found(response: &RawResponse) -> bool {
    response_error_code(response).as_deref() == Some("TableNotFound")
}

/// The [`StoreError`] for an unsuccessful response: its status and error code, nothing else.
fn status_error(response: &RawResponse) -> StoreError {
    let status = u16::from(response.status());
    let code = response_error_code(response);
    StoreError::from_status(
        status,
        SdkFailure::text(format!(
            "HTTP {status} ({}) from the table service",
            code.as_deref().unwrap_or("no error code")
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn urls() -> Urls {
        Urls::new("http://127.0.0.1:10002/devstoreaccount1/", "Calls")
    }

    #[test]
    fn entity_urls_double_quotes_and_percent_encode_keys() {
        assert_eq!(
            urls().entity("O'Brien", "a b%c/ü"),
            "http://127.0.0.1:10002/devstoreaccount1/Calls(PartitionKey='O%27%27Brien',RowKey='a%20b%25c%2F%C3%BC')"
        );
        // The url crate keeps the encoding as it is.
        let parsed = Url::parse(&urls().entity("O'Brien", "a b%c")).unwrap();
        assert_eq!(
            parsed.path(),
            "/devstoreaccount1/Calls(PartitionKey='O%27%27Brien',RowKey='a%20b%25c')"
        );
        assert_eq!(
            urls().query(),
            "http://127.0.0.1:10002/devstoreaccount1/Calls()"
        );
        assert_eq!(
            urls().batch(),
            "http://127.0.0.1:10002/devstoreaccount1/$batch"
        );
    }

    #[test]
    fn query_string_encodes_filter_select_top_and_continuation() {
        let q = Query::new()
            .filter(filter::eq("PartitionKey", "O'Brien & co"))
            .select(["Name", "RowKey"])
            .top(10)
            .continuation(Some(Continuation {
                next_partition_key: "1!8!cGsx".into(),
                next_row_key: Some("1!8!cms+".into()),
            }));
        assert_eq!(
            q.query_string().unwrap(),
            "$filter=PartitionKey%20eq%20%27O%27%27Brien%20%26%20co%27\
             &$select=PartitionKey%2CRowKey%2CName&$top=10\
             &NextPartitionKey=1%218%21cGsx&NextRowKey=1%218%21cms%2B"
        );
        assert_eq!(Query::new().query_string().unwrap(), "");
        for bad in [0, 1001] {
            assert!(matches!(
                Query::new().top(bad).query_string(),
                Err(StoreError::InvalidInput(_))
            ));
        }
    }

    #[test]
    fn continuation_comes_from_both_headers_or_the_partition_alone() {
        let mut headers = Headers::new();
        assert_eq!(continuation_from(&headers), None);
        headers.insert("x-ms-continuation-nextpartitionkey", "1!8!cGsx");
        assert_eq!(
            continuation_from(&headers),
            Some(Continuation {
                next_partition_key: "1!8!cGsx".into(),
                next_row_key: None
            })
        );
        headers.insert("x-ms-continuation-nextrowkey", "1!4!cjE-");
        assert_eq!(
            continuation_from(&headers).and_then(|c| c.next_row_key),
            Some("1!4!cjE-".to_owned())
        );
    }

    #[test]
    fn table_names_follow_the_service_rules() {
        for ok in ["abc", "CallRecords", "a1b2c3", &"a".repeat(63)] {
            assert!(validate_table_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "1abc",
            "call-records",
            "call_records",
            "tables",
            "Tables",
            &"a".repeat(64),
        ] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batches_are_checked_before_sending() {
        let e = |rk: &str| Entity::new("p", rk);
        let hundred: Vec<BatchOp> = (0..100)
            .map(|i| BatchOp::Insert(e(&i.to_string())))
            .collect();
        assert!(validate_batch("p", &hundred).is_ok());
        let mut too_many = hundred;
        too_many.push(BatchOp::Insert(e("x")));
        let cases: Vec<(&str, Vec<BatchOp>, &str)> = vec![
            ("101 operations", too_many, "at most 100"),
            (
                "another partition",
                vec![
                    BatchOp::Insert(e("a")),
                    BatchOp::Insert(Entity::new("q", "b")),
                ],
                "operation 1 is for another partition",
            ),
            (
                "same row twice",
                vec![
                    BatchOp::Insert(e("a")),
                    BatchOp::Delete {
                        rk: "a".into(),
                        if_match: None,
                    },
                ],
                "operation 1 is for a row key",
            ),
            (
                "invalid key in a delete",
                vec![BatchOp::Delete {
                    rk: "a/b".into(),
                    if_match: None,
                }],
                "operation 0: RowKey contains the forbidden character U+002F",
            ),
            (
                "invalid entity",
                vec![BatchOp::Upsert(
                    e("a").with("S", "x".repeat(40_000)),
                    WriteMode::Merge,
                )],
                "operation 0: string property `S`",
            ),
        ];
        for (case, ops, expected) in cases {
            let err = validate_batch("p", &ops).unwrap_err();
            assert!(
                matches!(&err, StoreError::InvalidInput(why) if why.contains(expected)),
                "{case}: {err}"
            );
        }
    }

    #[test]
    fn error_codes_are_kept_only_when_they_are_plain_identifiers() {
        let body = serde_json::json!({"odata.error": {"code": "EntityAlreadyExists", "message": {"value": "secret"}}});
        assert_eq!(
            error_code(None, Some(&body)).as_deref(),
            Some("EntityAlreadyExists")
        );
        assert_eq!(
            error_code(Some("TableNotFound"), Some(&body)).as_deref(),
            Some("TableNotFound")
        );
        assert_eq!(error_code(Some("a b?sig=x"), None), None);
    }

    #[test]
    fn x_ms_date_is_rfc_1123_in_gmt() {
        let t = std::time::SystemTime::from(datetime!(1994-11-06 08:49:37 UTC));
        assert_eq!(httpdate::fmt_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn endpoint_gets_a_trailing_slash_and_loses_any_query() {
        let store = TableStore::new(
            &Url::parse("http://127.0.0.1:10002/devstoreaccount1?sv=x&sig=y").unwrap(),
            "Calls",
            &StorageAuth::Sas(secrecy::SecretString::from("sv=x&sig=y")),
            reqwest::Client::new(),
            StorageRetry::default(),
        )
        .unwrap();
        assert_eq!(
            store.inner.urls.table(),
            "http://127.0.0.1:10002/devstoreaccount1/Calls"
        );
        assert_eq!(store.name(), "Calls");
    }
}
