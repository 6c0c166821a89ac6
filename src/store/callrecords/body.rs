//! The stored form of a call-record document: gzip, cut into 64 KiB Binary parts, twelve parts to a
//! `CallRecordBodies` entity, under row keys that sort by version and part.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::super::StoreError;
use super::super::table::{EdmValue, Entity};

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

pub(super) fn body_prefix(version: i64) -> String {
    // Zero-padded so that row keys sort by version and part; versions are never negative in Graph.
    format!("body-{:020}-", version.max(0))
}

pub(super) fn body_key(version: i64, n: u32) -> String {
    format!("{}{n:05}", body_prefix(version))
}

fn part_name(n: usize) -> String {
    format!("Data{n:02}")
}

/// The body entities of one version: each holds up to [`PARTS_PER_ENTITY`] parts of 64 KiB.
pub(super) fn body_entities(id: &str, version: i64, body: &[u8]) -> Vec<Entity> {
    let per_entity = PART_BYTES * PARTS_PER_ENTITY;
    let mut entities = Vec::with_capacity(body.len() / per_entity + 1);
    for (n, chunk) in body.chunks(per_entity).enumerate() {
        let mut entity = Entity::new(id, body_key(version, u32::try_from(n).unwrap_or(u32::MAX)));
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
        let entities = body_entities("r", 7, &body);
        let mut joined = Vec::new();
        for (n, entity) in entities.iter().enumerate() {
            assert_eq!(entity.row_key, body_key(7, u32::try_from(n).unwrap()));
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
    fn body_keys_sort_by_version_then_part() {
        let mut keys = vec![
            body_key(10, 0),
            body_key(9, 1),
            body_key(9, 0),
            body_key(10, 11),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                body_key(9, 0),
                body_key(9, 1),
                body_key(10, 0),
                body_key(10, 11)
            ]
        );
    }
}
