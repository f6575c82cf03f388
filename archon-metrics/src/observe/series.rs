//! Histogram handles of the RED layers, kept per label set so that a request whose series exists
//! costs a hash, a read lock and an atomic push: no label vector, no allocation.
//!
//! Used only once [`install`](crate::install) has set the process-wide recorder: handles are
//! bound to the recorder present when they are registered, so before that (or under a local
//! recorder from [`build_recorder`](crate::build_recorder)) every call goes through the
//! `metrics` macros instead.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

use metrics::{Histogram, Label};

/// Most labels a RED series carries.
pub(crate) const MAX_LABELS: usize = 8;

/// More distinct series than this are recorded through the macros, uncached.
const MAX_CACHED_SERIES: usize = 8_192;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Called by `install` once the global recorder is set.
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// One series' labels, borrowed: keys are static, values borrowed from the request.
#[derive(Debug, Default)]
pub(crate) struct Labels<'a> {
    pairs: [(&'static str, &'a str); MAX_LABELS],
    len: usize,
}

impl<'a> Labels<'a> {
    pub(crate) fn push(&mut self, key: &'static str, value: &'a str) {
        if let Some(slot) = self.pairs.get_mut(self.len) {
            *slot = (key, value);
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[(&'static str, &'a str)] {
        &self.pairs[..self.len]
    }

    fn to_labels(&self) -> Vec<Label> {
        self.as_slice()
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect()
    }
}

#[derive(Debug)]
struct Entry {
    name: &'static str,
    labels: Vec<(&'static str, Box<str>)>,
    handle: Histogram,
}

impl Entry {
    fn matches(&self, name: &str, labels: &[(&'static str, &str)]) -> bool {
        self.name == name
            && self.labels.len() == labels.len()
            && self
                .labels
                .iter()
                .zip(labels)
                .all(|((k1, v1), (k2, v2))| k1 == k2 && **v1 == **v2)
    }
}

#[derive(Debug, Default)]
struct Cache {
    series: HashMap<u64, Vec<Entry>>,
    len: usize,
}

fn cache() -> &'static RwLock<Cache> {
    static CACHE: OnceLock<RwLock<Cache>> = OnceLock::new();
    CACHE.get_or_init(RwLock::default)
}

fn hash_of(name: &str, labels: &[(&'static str, &str)]) -> u64 {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut hasher = STATE.get_or_init(Default::default).build_hasher();
    name.hash(&mut hasher);
    for (k, v) in labels {
        k.hash(&mut hasher);
        v.hash(&mut hasher);
    }
    hasher.finish()
}

/// Records `value` into the histogram `name` with `labels`.
pub(crate) fn record(name: &'static str, labels: &Labels<'_>, value: f64) {
    if !ENABLED.load(Ordering::Acquire) {
        metrics::histogram!(name, labels.to_labels()).record(value);
        return;
    }
    let pairs = labels.as_slice();
    let hash = hash_of(name, pairs);
    if let Ok(cache) = cache().read()
        && let Some(entry) = cache
            .series
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(|e| e.matches(name, pairs)))
    {
        entry.handle.record(value);
        return;
    }
    let handle = metrics::histogram!(name, labels.to_labels());
    handle.record(value);
    if let Ok(mut cache) = cache().write()
        && cache.len < MAX_CACHED_SERIES
    {
        let bucket = cache.series.entry(hash).or_default();
        if !bucket.iter().any(|e| e.matches(name, pairs)) {
            bucket.push(Entry {
                name,
                labels: pairs.iter().map(|(k, v)| (*k, Box::from(*v))).collect(),
                handle,
            });
            cache.len += 1;
        }
    }
}
