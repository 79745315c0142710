//! Next fires checked against vectors transcribed from croniter's test suite: the header of
//! `croniter.txt` names the source, its licence, and the cases left out and why.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::schedule::Schedule;

const VECTORS: &str = include_str!("croniter.txt");

#[test]
fn next_fires_match_croniters_published_vectors() {
    let mut cases = 0;
    for (index, line) in VECTORS.lines().enumerate() {
        let number = index + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let [zone, line_text, start, fires] = line.split(" | ").collect::<Vec<_>>()[..] else {
            panic!("croniter.txt:{number}: expected ZONE | SCHEDULE | START | FIRES");
        };
        let tz = TimeZone::get(zone).unwrap_or_else(|e| panic!("croniter.txt:{number}: {e}"));
        let schedule = Schedule::parse(line_text, &tz)
            .unwrap_or_else(|e| panic!("croniter.txt:{number}: {e}"));
        let instant = |text: &str| -> Timestamp {
            text.parse()
                .unwrap_or_else(|e| panic!("croniter.txt:{number}: `{text}`: {e}"))
        };
        let mut after = instant(start);
        for expected in fires.split(' ').map(instant) {
            assert_eq!(
                schedule.next_after(after),
                Some(expected),
                "croniter.txt:{number}: `{line_text}` in {zone} after {after}"
            );
            after = expected;
        }
        cases += 1;
    }
    assert!(cases > 100, "only {cases} cases read");
}
