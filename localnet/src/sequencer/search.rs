//! The indexes behind `tx_search`, `block_search`, `block_by_hash` and `header_by_hash`, as
//! CometBFT's `kv` indexer answers them: a tx is found by `tx.hash`, `tx.height` and the
//! `<event type>.<attribute key>` of every event of its result; a block by `block.height` and
//! the attributes of its FinalizeBlock events.
//!
//! In memory, like the `tx` index, and bounded the same way: the last [`SEARCH_TXS`] txs and
//! [`SEARCH_BLOCKS`] blocks (older ones are still served by height, not found by search or
//! hash). A search scans the entries in height order and filters them with the query's
//! conditions (tendermint-rpc's [`Query`](tendermint_rpc::query::Query) grammar, the one clients build queries with); at
//! these sizes a scan takes milliseconds, and it needs no index per attribute.

use std::collections::BTreeMap;

use tendermint_proto::v0_38::abci::Event;

use super::mempool::tx_hash;
use super::rpc::events::{add_abci_events, Filter};
use super::state::CommittedBlock;

/// Most txs searchable.
pub const SEARCH_TXS: usize = 100_000;
/// Most blocks searchable or found by hash.
pub const SEARCH_BLOCKS: usize = 100_000;
/// Largest page (CometBFT's `maxPerPage`).
pub const MAX_PER_PAGE: usize = 100;
/// Page size when the request names none (CometBFT's `defaultPerPage`).
pub const DEFAULT_PER_PAGE: usize = 30;

/// Composite key -> values, of one tx or block.
pub type Keys = BTreeMap<String, Vec<String>>;

/// The searchable txs and blocks.
#[derive(Debug, Default)]
pub struct SearchIndex {
    /// (height, index in block) -> keys.
    txs: BTreeMap<(u64, u32), Keys>,
    /// height -> (block hash, keys).
    blocks: BTreeMap<u64, (Vec<u8>, Keys)>,
    /// block hash -> height, for the blocks in `blocks`.
    by_hash: BTreeMap<Vec<u8>, u64>,
}

/// The keys of tx `i` of block `b`.
pub fn tx_keys(b: &CommittedBlock, i: usize) -> Keys {
    let mut keys = Keys::new();
    if let Some(tx) = b.block.txs.get(i) {
        keys.insert("tx.hash".to_owned(), vec![hex::encode_upper(tx_hash(tx))]);
    }
    keys.insert("tx.height".to_owned(), vec![b.height().to_string()]);
    let events: &[Event] = b
        .result
        .tx_results
        .get(i)
        .map_or(&[], |r| r.events.as_slice());
    add_abci_events(&mut keys, events);
    keys
}

/// The keys of block `b`.
pub fn block_keys(b: &CommittedBlock) -> Keys {
    let mut keys = Keys::from([("block.height".to_owned(), vec![b.height().to_string()])]);
    add_abci_events(&mut keys, &b.result.events);
    keys
}

/// Which end of the chain a search starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (CometBFT's default).
    Asc,
    /// Newest first.
    Desc,
}

/// A page of matches, and how many matched in all.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The page's matches.
    pub items: Vec<T>,
    /// All matches.
    pub total: usize,
}

/// A page out of range, or of no size.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// `per_page` below 1.
    #[error("zero or negative perPage: {0}")]
    PerPage(i64),
    /// `page` past the last one (or below 1).
    #[error("page should be within [1, {pages}] range, given {page}")]
    Page {
        /// Pages there are.
        pages: usize,
        /// Page asked for.
        page: i64,
    },
}

/// Page `page` (from 1; default 1) of `per_page` items (default 30, at most 100) out of
/// `matches`, as CometBFT pages its searches.
fn paginate<T: Clone>(
    matches: &[T],
    page: Option<i64>,
    per_page: Option<i64>,
) -> Result<Page<T>, PageError> {
    let per_page = match per_page {
        None => DEFAULT_PER_PAGE,
        Some(n) if n < 1 => return Err(PageError::PerPage(n)),
        Some(n) => usize::try_from(n).unwrap_or(MAX_PER_PAGE).min(MAX_PER_PAGE),
    };
    let total = matches.len();
    let pages = total.div_ceil(per_page).max(1);
    let page_no = page.unwrap_or(1);
    let index = usize::try_from(page_no)
        .ok()
        .filter(|p| (1..=pages).contains(p))
        .ok_or(PageError::Page {
            pages,
            page: page_no,
        })?;
    let items = matches
        .iter()
        .skip((index - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    Ok(Page { items, total })
}

impl SearchIndex {
    /// Indexes committed block `b`.
    pub fn add_block(&mut self, b: &CommittedBlock) {
        let height = b.height();
        for i in 0..b.block.txs.len() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            self.txs.insert((height, index), tx_keys(b, i));
        }
        while self.txs.len() > SEARCH_TXS {
            self.txs.pop_first();
        }
        self.blocks
            .insert(height, (b.block.hash.to_vec(), block_keys(b)));
        self.by_hash.insert(b.block.hash.to_vec(), height);
        while self.blocks.len() > SEARCH_BLOCKS {
            if let Some((_, (hash, _))) = self.blocks.pop_first() {
                self.by_hash.remove(&hash);
            }
        }
    }

    /// Forgets the txs and blocks below `height` (pruned).
    pub fn forget_below(&mut self, height: u64) {
        self.txs = self.txs.split_off(&(height, 0));
        let kept = self.blocks.split_off(&height);
        for (hash, _) in std::mem::replace(&mut self.blocks, kept).into_values() {
            self.by_hash.remove(&hash);
        }
    }

    /// The height of the block of hash `hash`.
    pub fn height_of(&self, hash: &[u8]) -> Option<u64> {
        self.by_hash.get(hash).copied()
    }

    /// The (height, index) of the txs `filter` selects, in `order`, paged.
    pub fn txs(
        &self,
        filter: &Filter,
        order: Order,
        page: Option<i64>,
        per_page: Option<i64>,
    ) -> Result<Page<(u64, u32)>, PageError> {
        let hits = self.txs.iter().filter(|(_, k)| filter.matches_keys(k));
        let mut all: Vec<(u64, u32)> = hits.map(|(at, _)| *at).collect();
        if order == Order::Desc {
            all.reverse();
        }
        paginate(&all, page, per_page)
    }

    /// The heights of the blocks `filter` selects, in `order`, paged.
    pub fn blocks(
        &self,
        filter: &Filter,
        order: Order,
        page: Option<i64>,
        per_page: Option<i64>,
    ) -> Result<Page<u64>, PageError> {
        let hits = self
            .blocks
            .iter()
            .filter(|(_, (_, k))| filter.matches_keys(k));
        let mut all: Vec<u64> = hits.map(|(h, _)| *h).collect();
        if order == Order::Desc {
            all.reverse();
        }
        paginate(&all, page, per_page)
    }
}

#[cfg(test)]
#[allow(non_snake_case, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paginate__should_page_as_cometbft_does() {
        let items: Vec<u32> = (0..65).collect();
        let p = paginate(&items, None, None).unwrap();
        assert_eq!((p.items.len(), p.total, p.items[0]), (30, 65, 0));
        let p = paginate(&items, Some(3), Some(30)).unwrap();
        assert_eq!(p.items, (60..65).collect::<Vec<_>>());
        assert_eq!(
            paginate(&items, Some(4), Some(30)),
            Err(PageError::Page { pages: 3, page: 4 })
        );
        assert_eq!(
            paginate(&items, Some(1), Some(0)),
            Err(PageError::PerPage(0))
        );
        assert_eq!(
            paginate(&items, Some(1), Some(1000)).unwrap().items.len(),
            65
        );
        // No match: one empty page.
        let none: Vec<u32> = Vec::new();
        assert_eq!(paginate(&none, Some(1), None).unwrap().total, 0);
        assert!(paginate(&none, Some(2), None).is_err());
    }
}
