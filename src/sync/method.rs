//! How a full read reads a hash, and how it falls back: `HGETALL` for a
//! small hash, `DUMP` for a large one (decoded by `dump`), `HSCAN` in
//! chunks for a huge one; `HGETALL` again when `DUMP` is refused or its
//! payload is in an encoding this proxy does not decode. Pure bookkeeping
//! of what the reads found (ARCHITECTURE.md, "src/sync").

use super::redis::ReadMethod;
use super::tuning::Tuning;

#[derive(Debug, Clone, Default)]
pub struct MethodChoice {
    /// Entries at the last read; 0 means unknown (the caller asks `HLEN`
    /// first, so that a huge hash is never read with one `HGETALL`).
    last_size: usize,
    /// `DUMP` was refused (ACL) or misread in this session.
    dump_refused: bool,
    /// A `DUMP` came back in an encoding we do not read (a Redis 6
    /// ziplist, say) at this size: `HGETALL` until the hash is twice as
    /// large (the server may keep hashes above our threshold that way).
    dump_unreadable_up_to: usize,
    /// The table never wants `DUMP` (`Table::READ_BY_DUMP`).
    dump_off: bool,
    /// The last `DUMP` was of a dict (not a listpack).
    dict: bool,
}

impl MethodChoice {
    /// `by_dump`: whether a large hash may be read with `DUMP`.
    pub fn new(by_dump: bool) -> MethodChoice {
        MethodChoice {
            dump_off: !by_dump,
            ..MethodChoice::default()
        }
    }

    /// A new connection may come with other rights (or be another server
    /// with other settings).
    pub fn new_session(&mut self) {
        self.dump_refused = false;
        self.dump_unreadable_up_to = 0;
    }

    pub fn size_known(&self) -> bool {
        self.last_size > 0
    }

    pub fn last_size(&self) -> usize {
        self.last_size
    }

    pub fn read_size(&mut self, entries: usize) {
        self.last_size = entries;
    }

    pub fn dump_refused(&mut self) {
        self.dump_refused = true;
    }

    /// What the last `DUMP` read was: a dict or a listpack.
    pub fn read_encoding(&mut self, dict: bool) {
        self.dict = dict;
    }

    /// The server answered `DUMP` with a payload we do not decode.
    pub fn dump_unreadable(&mut self) {
        self.dump_unreadable_up_to = self.last_size;
    }

    /// How to read the hash whole. `periodic`: for the safety net, which
    /// nothing waits for: a large dict is then read by `HSCAN` pages
    /// (`Tuning::periodic_scan_above`), so that Redis is never blocked for
    /// long by a read no change asked for. (A listpack is not: `HSCAN`
    /// returns it whole in one reply, whatever the `COUNT`.)
    pub fn choose(&self, tuning: &Tuning, periodic: bool) -> ReadMethod {
        if self.last_size > tuning.scan_threshold
            || (periodic && self.dict && self.last_size > tuning.periodic_scan_above)
        {
            ReadMethod::HScan
        } else if self.last_size > tuning.dump_threshold
            && self.last_size > self.dump_unreadable_up_to.saturating_mul(2)
            && !self.dump_refused
            && !self.dump_off
        {
            ReadMethod::Dump
        } else {
            ReadMethod::HGetAll
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_picks_the_method() {
        let tuning = Tuning::default();
        let mut m = MethodChoice::default();
        assert!(!m.size_known());
        assert_eq!(m.choose(&tuning, false), ReadMethod::HGetAll);
        m.read_size(tuning.dump_threshold + 1);
        assert_eq!(m.choose(&tuning, false), ReadMethod::Dump);
        m.read_size(tuning.scan_threshold + 1);
        assert_eq!(m.choose(&tuning, false), ReadMethod::HScan);
        m.read_size(10);
        assert_eq!(m.choose(&tuning, false), ReadMethod::HGetAll);
    }

    #[test]
    fn the_periodic_read_of_a_large_dict_scans_and_of_a_listpack_dumps() {
        let tuning = Tuning::default();
        let mut m = MethodChoice::default();
        m.read_size(tuning.periodic_scan_above + 1);
        m.read_encoding(true);
        assert_eq!(m.choose(&tuning, true), ReadMethod::HScan);
        assert_eq!(m.choose(&tuning, false), ReadMethod::Dump);
        m.read_encoding(false);
        assert_eq!(m.choose(&tuning, true), ReadMethod::Dump);
        m.read_encoding(true);
        m.read_size(tuning.periodic_scan_above);
        assert_eq!(m.choose(&tuning, true), ReadMethod::Dump);
    }

    #[test]
    fn a_table_without_dump_reads_large_hashes_with_hgetall() {
        let tuning = Tuning::default();
        let mut m = MethodChoice::new(false);
        m.read_size(tuning.dump_threshold + 1);
        assert_eq!(m.choose(&tuning, false), ReadMethod::HGetAll);
        m.new_session();
        assert_eq!(m.choose(&tuning, false), ReadMethod::HGetAll);
        m.read_size(tuning.scan_threshold + 1);
        assert_eq!(m.choose(&tuning, false), ReadMethod::HScan);
    }

    #[test]
    fn refusals_and_unreadable_payloads_fall_back_to_hgetall() {
        let tuning = Tuning::default();
        let mut m = MethodChoice::default();
        m.read_size(1000);
        m.dump_refused();
        assert_eq!(m.choose(&tuning, false), ReadMethod::HGetAll);
        m.new_session();
        assert_eq!(m.choose(&tuning, false), ReadMethod::Dump);
        // Unreadable at 1,000: HGETALL until the hash doubles.
        m.dump_unreadable();
        m.read_size(1999);
        assert_eq!(m.choose(&tuning, false), ReadMethod::HGetAll);
        m.read_size(2001);
        assert_eq!(m.choose(&tuning, false), ReadMethod::Dump);
        // Huge hashes are scanned whatever DUMP did.
        m.dump_refused();
        m.read_size(tuning.scan_threshold + 1);
        assert_eq!(m.choose(&tuning, false), ReadMethod::HScan);
    }
}
