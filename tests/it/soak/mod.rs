//! The soak tests: minutes each, run by the full suite only, one process each (`scripts/test.sh`).

mod reliability_day;
mod reports_month;
