//! Shards: `--shard K/N` processes only the jobs whose id falls in shard K of N, so one
//! manifest can be split over N machines or accounts (each with its own database) and every
//! job belongs to exactly one shard. The shard is a stable hash of the id (the first eight
//! bytes of its SHA-256), so it never changes with the manifest's order, size or the build.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || index == 0 || index > count {
            return Err(format!(
                "{index}/{count} is not a shard: K/N needs 1 ≤ K ≤ N (e.g. 2/4)"
            ));
        }
        Ok(Shard { index, count })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// The shard (1-based) of `count` that a job id falls in.
    pub fn of(id: &str, count: u32) -> u32 {
        let digest = Sha256::digest(id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32 + 1
    }

    /// Whether the job `id` is this shard's.
    pub fn contains(self, id: &str) -> bool {
        Shard::of(id, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not K/N (e.g. 2/4)"))?;
        let number = |part: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?} is not K/N with whole numbers (e.g. 2/4)"))
        };
        Shard::new(number(index)?, number(count)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_is_not_one() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "1/0", "a/b", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_id_falls_in_exactly_one_shard_and_the_split_is_even_enough() {
        let count = 4;
        let mut sizes = [0usize; 4];
        for n in 0..4000 {
            let id = format!("job-{n}");
            let owners: Vec<u32> = (1..=count)
                .filter(|index| Shard::new(*index, count).unwrap().contains(&id))
                .collect();
            assert_eq!(owners.len(), 1, "{id}: {owners:?}");
            sizes[owners[0] as usize - 1] += 1;
        }
        assert!(
            sizes.iter().all(|size| (850..=1150).contains(size)),
            "{sizes:?}"
        );
    }

    #[test]
    fn the_shard_of_an_id_is_pinned() {
        // A changed hash would move jobs between machines that already split a catalog
        // (values computed independently from SHA-256).
        let shards: Vec<u32> = ["a", "b", "job-0001", "spring-hero-anna"]
            .iter()
            .map(|id| Shard::of(id, 7))
            .collect();
        assert_eq!(shards, [5, 1, 2, 6]);
    }
}
