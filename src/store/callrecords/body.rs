//! The stored form of a call-record document: gzip, cut into 64 KiB Binary parts, twelve parts to a
//! `CallRecordBodies` entity, under row keys that sort by version and part.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use table_storage::{EdmValue, Entity};

use super::super::StoreError;

/// Largest Binary property Table storage accepts.
pub(super) const PART_BYTES: usize = 64 * 1024;
/// Binary properties per body entity: 12 × 64 KiB stays well under the 1 MiB entity limit, and three
/// such entities (base64 in the request) under the 4 MiB transaction limit.
pub(super) const PARTS_PER_ENTITY: usize = 12;
pub(super) const BODY_ENTITIES_PER_BATCH: usize = 3;

pub(super) fn compress(document: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(document.len() / 8), Compression::new(6));
    encoder
        .write_all(document)
        .and_then(|()| encoder.finish())
        .map_err(|e| StoreError::InvalidInput(format!("compressing a document: {e}")))
}

/// The row-key prefix of one write's body parts: the version, then the writer's own token, so that
/// two writes of the same version (a repair, a redelivery after a crash) never share a key and a
/// reader never joins parts of two gzip streams. Zero-padded so that keys sort by version and part;
/// versions are never negative in Graph.
pub(super) fn body_prefix(version: i64, writer: &str) -> String {
    format!("{}{writer}-", legacy_prefix(version))
}

/// The prefix of releases that keyed parts by version alone (state rows without `Body`).
pub(super) fn legacy_prefix(version: i64) -> String {
    format!("body-{:020}-", version.max(0))
}

pub(super) fn body_key(prefix: &str, n: u32) -> String {
    format!("{prefix}{n:05}")
}

/// Whether `row_key` is a part directly under `prefix` (and not under a longer prefix that starts
/// the same way: a legacy prefix is the start of every newer prefix of its version).
pub(super) fn is_part_of(prefix: &str, row_key: &str) -> bool {
    row_key
        .strip_prefix(prefix)
        .is_some_and(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn part_name(n: usize) -> String {
    format!("Data{n:02}")
}

/// The body entities of one version: each holds up to [`PARTS_PER_ENTITY`] parts of 64 KiB.
pub(super) fn body_entities(id: &str, prefix: &str, body: &[u8]) -> Vec<Entity> {
    let per_entity = PART_BYTES * PARTS_PER_ENTITY;
    let mut entities = Vec::with_capacity(body.len() / per_entity + 1);
    for (n, chunk) in body.chunks(per_entity).enumerate() {
        let mut entity = Entity::new(id, body_key(prefix, u32::try_from(n).unwrap_or(u32::MAX)));
        for (p, part) in chunk.chunks(PART_BYTES).enumerate() {
            entity = entity.with(part_name(p), EdmValue::Binary(part.to_vec()));
        }
        entities.push(entity);
    }
    entities
}

/// The document from its body entities, in row-key order: the parts joined and decompressed.
///
/// # Errors
/// When the parts are not one complete gzip stream.
pub(super) fn decode<'a>(entities: impl Iterator<Item = &'a Entity>) -> std::io::Result<Vec<u8>> {
    let mut compressed = Vec::new();
    for entity in entities {
        for n in 0..PARTS_PER_ENTITY {
            match entity.properties.get(&part_name(n)) {
                Some(EdmValue::Binary(bytes)) => compressed.extend_from_slice(bytes),
                _ => break,
            }
        }
    }
    let mut document = Vec::with_capacity(compressed.len() * 8);
    GzDecoder::new(compressed.as_slice()).read_to_end(&mut document)?;
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_split_into_entities_of_bounded_parts_and_round_trip() {
        let document: Vec<u8> = (0..3_000_000u32).flat_map(|n| n.to_le_bytes()).collect();
        let body = compress(&document).unwrap();
        let prefix = body_prefix(7, "w");
        let entities = body_entities("r", &prefix, &body);
        let mut joined = Vec::new();
        for (n, entity) in entities.iter().enumerate() {
            assert_eq!(entity.row_key, body_key(&prefix, u32::try_from(n).unwrap()));
            assert!(entity.properties.len() <= PARTS_PER_ENTITY);
            for p in 0..entity.properties.len() {
                let Some(EdmValue::Binary(bytes)) = entity.properties.get(&part_name(p)) else {
                    panic!("part {p} missing")
                };
                assert!(bytes.len() <= PART_BYTES);
                joined.extend_from_slice(bytes);
            }
        }
        assert_eq!(joined, body);
        let mut back = Vec::new();
        GzDecoder::new(joined.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, document);
    }

    #[test]
    fn body_keys_sort_by_version_then_part_and_each_write_has_its_own() {
        let key = |version, writer, n| body_key(&body_prefix(version, writer), n);
        let mut keys = vec![
            key(10, "a", 0),
            key(9, "a", 1),
            key(9, "a", 0),
            key(10, "a", 11),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                key(9, "a", 0),
                key(9, "a", 1),
                key(10, "a", 0),
                key(10, "a", 11)
            ]
        );
        assert_ne!(key(9, "a", 0), key(9, "b", 0));
        // A legacy prefix does not claim the parts of a newer write of its version.
        assert!(is_part_of(
            &legacy_prefix(9),
            &body_key(&legacy_prefix(9), 3)
        ));
        assert!(!is_part_of(&legacy_prefix(9), &key(9, "a", 3)));
        assert!(is_part_of(&body_prefix(9, "a"), &key(9, "a", 3)));
    }
}
