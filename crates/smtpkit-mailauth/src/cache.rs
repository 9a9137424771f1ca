//! Record caches for mail-auth's lookups: parsed TXT records (SPF, DKIM keys, DMARC), MX, A,
//! AAAA and PTR, each an LRU that honours the expiry mail-auth gives (the answer's TTL). The
//! TXT cache also answers for special-use names that never reach DNS ([`TxtCache`]).

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::{DnsError, Error, MX, Parameters, RecordSet, ResolverCache, Txt};

use crate::special_use;

/// mail-auth's parameters with every cache of [`Caches`] plugged in.
pub(crate) type CachedParameters<'x, P> = Parameters<
    'x,
    P,
    TxtCache,
    LruCache<Box<str>, RecordSet<MX>>,
    LruCache<Box<str>, RecordSet<Ipv4Addr>>,
    LruCache<Box<str>, RecordSet<Ipv6Addr>>,
    LruCache<IpAddr, RecordSet<Box<str>>>,
>;

/// One cache per record type, shared by every check of an [`Authenticator`](crate::Authenticator).
#[derive(Debug)]
pub struct Caches {
    /// SPF, DKIM key and DMARC records, parsed.
    pub txt: TxtCache,
    /// MX (SPF `mx`).
    pub mx: LruCache<Box<str>, RecordSet<MX>>,
    /// A (SPF `a`, `mx`, iprev).
    pub ipv4: LruCache<Box<str>, RecordSet<Ipv4Addr>>,
    /// AAAA.
    pub ipv6: LruCache<Box<str>, RecordSet<Ipv6Addr>>,
    /// PTR (SPF `ptr`, iprev).
    pub ptr: LruCache<IpAddr, RecordSet<Box<str>>>,
}

impl Caches {
    /// Caches of `capacity` entries each (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            txt: TxtCache::new(capacity),
            mx: LruCache::new(capacity),
            ipv4: LruCache::new(capacity),
            ipv6: LruCache::new(capacity),
            ptr: LruCache::new(capacity),
        }
    }
}

/// A least-recently-used map whose entries expire; implements mail-auth's [`ResolverCache`].
pub struct LruCache<K: Hash + Eq, V> {
    inner: Mutex<lru::LruCache<K, (V, Instant)>>,
}

impl<K: Hash + Eq, V> std::fmt::Debug for LruCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LruCache")
            .field("len", &self.len())
            .finish()
    }
}

impl<K: Hash + Eq, V> LruCache<K, V> {
    /// A cache of `capacity` entries (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner: Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    /// Entries held, expired ones included until they are looked up or pushed out.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<K, (V, Instant)>> {
        // A panic while holding the lock cannot leave the map half-updated (lru's operations
        // complete or do not start), so a poisoned cache is still a good cache.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for LruCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut cache = self.lock();
        match cache.get(name) {
            Some((value, until)) if *until > Instant::now() => Some(value.clone()),
            Some(_) => {
                cache.pop(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().pop(name).map(|(value, _)| value)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        self.lock().put(key, (value, valid_until));
    }
}

/// The TXT records' [`LruCache`], which also answers for names of special-use domains as
/// hickory would without asking a server (see `special_use`): their lookups stop here, before
/// mail-auth builds a query. Such answers are not stored.
#[derive(Debug)]
pub struct TxtCache {
    records: LruCache<Box<str>, Txt>,
}

impl TxtCache {
    /// A cache of `capacity` records (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            records: LruCache::new(capacity),
        }
    }

    /// Records held, expired ones included until they are looked up or pushed out.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut buffer = [0; special_use::MAX_NAME];
        if let Some(code) =
            special_use::key_name(name, &mut buffer).and_then(special_use::txt_answer)
        {
            // What mail-auth makes of hickory's own answer for these names.
            return Some(Txt::Error(Error::Dns(DnsError::RecordNotFound(code))));
        }
        self.records.get(name)
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.records.remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        self.records.insert(key, value, valid_until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::hickory_resolver::proto::op::ResponseCode;
    use std::time::Duration;

    #[test]
    fn entries_expire_and_the_oldest_goes_first() {
        let cache: LruCache<Box<str>, u32> = LruCache::new(2);
        let later = Instant::now() + Duration::from_secs(60);
        cache.insert("a".into(), 1, later);
        cache.insert("b".into(), 2, Instant::now() - Duration::from_secs(1));
        assert_eq!(cache.get("a"), Some(1));
        // Expired: gone on lookup.
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.len(), 1);
        cache.insert("c".into(), 3, later);
        cache.insert("d".into(), 4, later);
        // Capacity two: "a" was the least recently used.
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.remove("c"), Some(3));
        assert_eq!(cache.get("d"), Some(4));
    }

    fn not_found(txt: Option<Txt>) -> Option<ResponseCode> {
        match txt {
            Some(Txt::Error(Error::Dns(DnsError::RecordNotFound(code)))) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn special_use_names_are_answered_without_a_record() {
        let cache = TxtCache::new(4);
        assert_eq!(
            not_found(cache.get("smtp-load.invalid.")),
            Some(ResponseCode::NXDomain)
        );
        assert_eq!(
            not_found(cache.get("_dmarc.invalid.")),
            Some(ResponseCode::NXDomain)
        );
        assert_eq!(
            not_found(cache.get("_dmarc.mail.localhost.")),
            Some(ResponseCode::NoError)
        );
        assert!(cache.is_empty());
        // Other names are records like any other.
        assert!(cache.get("sender.test.").is_none());
        let later = Instant::now() + Duration::from_secs(60);
        let record = Txt::Error(Error::Dns(DnsError::InvalidRecordType));
        cache.insert("sender.test.".into(), record, later);
        assert!(matches!(
            cache.get("sender.test."),
            Some(Txt::Error(Error::Dns(DnsError::InvalidRecordType)))
        ));
        assert_eq!(cache.len(), 1);
    }
}
