//! The directory as the call rows need it: what a users delta page says of each user
//! ([`UserChange`]), and each user's department and cost centre over time ([`Directory`]), from
//! which a call row gets the values that held when the call started.
//!
//! Why by the call's start, not by the moment of writing: a report row is read again for days
//! (the look-backs and the deep re-read) and a call record is written again with each version, so
//! "the department when the row was written" would change with every re-read after a move. A
//! version's start is the sync run that first saw it; the first version a user has applies to
//! every earlier call as well (nothing earlier is known). So a row gets the same values however
//! often it is written, and a user's move changes only the rows of calls after the sync saw it.

use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// The user properties the sync asks Graph for (`$select`) and keeps.
pub(crate) const SELECT: &str = "id,userPrincipalName,displayName,department,employeeOrgData,officeLocation,usageLocation,companyName";

/// The `Users` columns a delta item can set, with the Graph property each comes from.
pub(crate) const COLUMNS: [(&str, &str); 6] = [
    ("UserPrincipalName", "userPrincipalName"),
    ("DisplayName", "displayName"),
    ("Department", "department"),
    ("OfficeLocation", "officeLocation"),
    ("UsageLocation", "usageLocation"),
    ("CompanyName", "companyName"),
];
/// The columns from `employeeOrgData`.
pub(crate) const ORG_COLUMNS: [(&str, &str); 2] =
    [("CostCenter", "costCenter"), ("Division", "division")];

/// What one item of a users delta page says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserChange {
    /// The user's object id, lower case.
    pub(crate) id: String,
    /// `@removed`: deleted (for good, or into the recycle bin: either way gone from the directory).
    pub(crate) removed: bool,
    /// The columns the item carries: `None` for a property Graph sent as `null` (cleared). A
    /// property the item does not carry is not here and keeps its stored value, so a page that
    /// sends only what changed and one that sends everything give the same row.
    pub(crate) set: Vec<(&'static str, Option<String>)>,
}

/// Why a delta item was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadUser(pub(crate) &'static str);

impl UserChange {
    /// Reads one item of a users delta page.
    ///
    /// # Errors
    /// [`BadUser`] for an item that is not an object or has no usable id.
    pub(crate) fn parse(raw: &RawValue) -> Result<Self, BadUser> {
        let item: serde_json::Map<String, Value> = serde_json::from_str(raw.get())
            .map_err(|_| BadUser("the item is not a JSON object"))?;
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .filter(|id| is_object_id(id))
            .ok_or(BadUser("the item has no object id"))?;
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let mut set = Vec::new();
        for (column, property) in COLUMNS {
            if let Some(value) = item.get(property) {
                set.push((column, text(value)));
            }
        }
        match item.get("employeeOrgData") {
            // An object property comes whole: a member it lacks is empty.
            Some(Value::Object(org)) => {
                for (column, property) in ORG_COLUMNS {
                    set.push((column, org.get(property).and_then(text)));
                }
            }
            Some(_) => {
                for (column, _) in ORG_COLUMNS {
                    set.push((column, None));
                }
            }
            None => {}
        }
        Ok(Self {
            id,
            removed: item.contains_key("@removed"),
            set,
        })
    }
}

/// An object id: a GUID in its `8-4-4-4-12` hex form.
fn is_object_id(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// What a call row takes from the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Attribution {
    pub(crate) department: Option<String>,
    pub(crate) cost_center: Option<String>,
}

impl Attribution {
    pub(crate) fn is_empty(&self) -> bool {
        self.department.is_none() && self.cost_center.is_none()
    }
}

/// One version of a user's attribution, in force from `valid_from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) valid_from: OffsetDateTime,
    pub(crate) attribution: Attribution,
}

/// Every known user's versions, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Directory {
    users: HashMap<String, Vec<Version>>,
}

impl Directory {
    /// Adds a version of `user` (in any order; kept sorted).
    pub(crate) fn add(&mut self, user: &str, version: Version) {
        let versions = self.users.entry(user.to_ascii_lowercase()).or_default();
        let at = versions.partition_point(|v| v.valid_from <= version.valid_from);
        versions.insert(at, version);
    }

    /// The newest version of `user`.
    pub(crate) fn latest(&self, user: &str) -> Option<&Version> {
        self.users.get(user).and_then(|v| v.last())
    }

    /// What `user` (an object id, any case) had for a call that started at `at`: the version in
    /// force then, else (a call before the first version) the first. `None` for a user the
    /// directory does not know, one with neither value, and a call without a start time (no
    /// version can be said to have held then; the latest would change with every move).
    pub(crate) fn at(&self, user: &str, at: Option<OffsetDateTime>) -> Option<&Attribution> {
        let at = at?;
        let versions = self.users.get(&user.to_ascii_lowercase())?;
        let after = versions.partition_point(|v| v.valid_from <= at);
        let version = versions.get(after.saturating_sub(1))?;
        Some(&version.attribution).filter(|a| !a.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn attribution(department: &str, cost_center: &str) -> Attribution {
        Attribution {
            department: Some(department.to_owned()),
            cost_center: Some(cost_center.to_owned()),
        }
    }

    #[test]
    fn a_delta_item_sets_what_it_carries_and_clears_what_is_null() {
        let change = UserChange::parse(&raw(
            r#"{"id":"87D349ED-44D7-43E1-9A83-5F2406DEE5BD","displayName":"Adele Vance",
               "department":null,"employeeOrgData":{"costCenter":"CC-100"}}"#,
        ))
        .unwrap();
        assert_eq!(change.id, "87d349ed-44d7-43e1-9a83-5f2406dee5bd");
        assert!(!change.removed);
        assert_eq!(
            change.set,
            vec![
                ("DisplayName", Some("Adele Vance".to_owned())),
                ("Department", None),
                ("CostCenter", Some("CC-100".to_owned())),
                ("Division", None),
            ]
        );
    }

    #[test]
    fn a_removed_user_is_marked_and_an_item_without_an_object_id_is_refused() {
        let gone = UserChange::parse(&raw(
            r#"{"id":"87d349ed-44d7-43e1-9a83-5f2406dee5bd","@removed":{"reason":"changed"}}"#,
        ))
        .unwrap();
        assert!(gone.removed);
        assert!(gone.set.is_empty());
        assert!(UserChange::parse(&raw(r#"{"displayName":"x"}"#)).is_err());
        assert!(UserChange::parse(&raw(r#"{"id":"not-a-guid"}"#)).is_err());
        assert!(UserChange::parse(&raw("[1]")).is_err());
    }

    #[test]
    fn a_call_gets_the_version_in_force_at_its_start_and_earlier_calls_the_first() {
        let mut directory = Directory::default();
        let user = "87d349ed-44d7-43e1-9a83-5f2406dee5bd";
        directory.add(
            user,
            Version {
                valid_from: datetime!(2026-12-01 10:00 UTC),
                attribution: attribution("Sales", "CC-200"),
            },
        );
        directory.add(
            user,
            Version {
                valid_from: OffsetDateTime::UNIX_EPOCH,
                attribution: attribution("Finance", "CC-100"),
            },
        );
        let at = |t| directory.at(&user.to_ascii_uppercase(), Some(t)).cloned();
        assert_eq!(
            at(datetime!(2026-11-01 09:00 UTC)),
            Some(attribution("Finance", "CC-100"))
        );
        assert_eq!(
            at(datetime!(2026-12-01 09:59 UTC)),
            Some(attribution("Finance", "CC-100"))
        );
        assert_eq!(
            at(datetime!(2026-12-01 10:00 UTC)),
            Some(attribution("Sales", "CC-200"))
        );
        assert_eq!(directory.at(user, None), None, "no start, no attribution");
        assert_eq!(
            directory.at("00000000-0000-0000-0000-000000000000", None),
            None
        );
    }
}
