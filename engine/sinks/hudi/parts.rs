//! Rows numbered across consecutive parts: the query's batches ([`super::merge::IncomingRows`]),
//! the record keys each thread made ([`super::keys::RecordKeys`]). A row is found by its number
//! without copying the parts into one.

/// Where each part starts among rows numbered from 0 across the parts, in order.
#[derive(Debug, Clone, Default)]
pub struct PartStarts {
    /// The number of each part's first row.
    starts: Vec<usize>,
    /// Rows in all the parts.
    len: usize,
}

impl PartStarts {
    /// Parts of `lengths` rows, in order.
    pub fn new(lengths: impl IntoIterator<Item = usize>) -> PartStarts {
        let mut starts = PartStarts::default();
        for rows in lengths {
            starts.push(rows);
        }
        starts
    }

    /// Appends a part of `rows` rows.
    pub fn push(&mut self, rows: usize) {
        self.starts.push(self.len);
        self.len += rows;
    }

    /// Rows in all the parts.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The part holding row `row` (below [`Self::len`]) and the row's index in it. An empty
    /// part starts where the next one does, and is never the answer.
    pub fn locate(&self, row: usize) -> (usize, usize) {
        let part = self.starts.partition_point(|&start| start <= row) - 1;
        (part, row - self.starts[part])
    }

    /// [`Self::locate`] for a row likely in part `near` (the part of the row before, when rows
    /// come in order): checked first, searched only when it misses.
    pub fn locate_near(&self, row: usize, near: usize) -> (usize, usize) {
        let end = self.starts.get(near + 1).copied().unwrap_or(self.len);
        match self.starts.get(near) {
            Some(&start) if start <= row && row < end => (near, row - start),
            _ => self.locate(row),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_in_their_part_whatever_the_hint() {
        // Parts of 2, 0, 1 and 2 rows: the empty part is never the answer.
        let starts = PartStarts::new([2, 0, 1, 2]);
        assert_eq!(starts.len(), 5);
        assert_eq!(starts.locate(1), (0, 1));
        assert_eq!(starts.locate(2), (2, 0));
        assert_eq!(starts.locate(4), (3, 1));
        for row in 0..5 {
            for near in 0..6 {
                assert_eq!(
                    starts.locate_near(row, near),
                    starts.locate(row),
                    "{row} {near}"
                );
            }
        }
    }
}
