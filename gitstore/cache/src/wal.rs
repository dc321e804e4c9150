//! Durability: a write-ahead log plus a snapshot in the data directory.
//!
//! Files:
//! - `snapshot`: the whole store (every retained key version, leases, ids) at
//!   some log index, written to `snapshot.tmp`, fsynced, renamed, and the
//!   directory fsynced, so a crash leaves either the old or the new one.
//! - `wal`: one frame per applied request after that snapshot. A frame is
//!   `[len: u32 LE][crc32 of payload: u32 LE][payload]`, the payload a protobuf
//!   record (prost-derived types below, private to this file).
//! - `LOCK`: held with an exclusive file lock while the store is open.
//!
//! Fsync policy: a write is acknowledged only after the frames holding it were
//! written and `fdatasync`ed. The committer writes every request that arrived
//! while the previous fsync ran as one `write` + one `fdatasync` (group commit),
//! which is how throughput scales with concurrent writers. On open, a torn or
//! corrupt frame at the tail (a write cut by a crash, never acknowledged) is cut
//! off; replay stops there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use prost::Message;

use crate::error::OpenError;
use crate::mvcc::{Change, Record, Rev, Store};
use crate::types::KeyValue;

#[derive(Clone, PartialEq, prost::Message)]
struct PbKv {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "3")]
    mod_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(bytes = "bytes", tag = "5")]
    value: Bytes,
    #[prost(int64, tag = "6")]
    lease: i64,
    #[prost(bool, tag = "7")]
    tombstone: bool,
    #[prost(uint32, tag = "8")]
    sub: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbLease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbRecord {
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(int64, tag = "2")]
    revision: i64,
    #[prost(message, repeated, tag = "3")]
    changes: Vec<PbKv>,
    #[prost(message, repeated, tag = "4")]
    lease_grants: Vec<PbLease>,
    #[prost(int64, repeated, tag = "5")]
    lease_revokes: Vec<i64>,
    #[prost(int64, tag = "6")]
    compact: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbHistory {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(message, repeated, tag = "2")]
    versions: Vec<PbKv>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbSnapshot {
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(int64, tag = "2")]
    revision: i64,
    #[prost(int64, tag = "3")]
    compact_revision: i64,
    #[prost(message, repeated, tag = "4")]
    keys: Vec<PbHistory>,
    #[prost(message, repeated, tag = "5")]
    leases: Vec<PbLease>,
    #[prost(uint64, tag = "6")]
    member_id: u64,
    #[prost(uint64, tag = "7")]
    cluster_id: u64,
}

/// Identity of the store, kept in the snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub member_id: u64,
    pub cluster_id: u64,
}

pub(crate) struct Wal {
    dir: PathBuf,
    file: File,
    size: u64,
    meta: Meta,
    buf: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("a record is smaller than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `data` into valid frames; returns them and the length of the valid prefix.
fn frames(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= 8 {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let start = pos + 8;
        let Some(end) = start.checked_add(len) else {
            break;
        };
        if end > data.len() {
            break;
        }
        let payload = &data[start..end];
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.push(payload);
        pos = end;
    }
    (out, pos)
}

fn kv_to_pb(
    key: &Bytes,
    kv: &Option<KeyValue>,
    mod_revision: i64,
    sub: u32,
    with_key: bool,
) -> PbKv {
    let key = if with_key { key.clone() } else { Bytes::new() };
    match kv {
        Some(kv) => PbKv {
            key,
            create_revision: kv.create_revision,
            mod_revision,
            version: kv.version,
            value: kv.value.clone(),
            lease: kv.lease,
            tombstone: false,
            sub,
        },
        None => PbKv {
            key,
            mod_revision,
            tombstone: true,
            sub,
            ..Default::default()
        },
    }
}

fn kv_from_pb(key: &Bytes, pb: &PbKv) -> Option<KeyValue> {
    if pb.tombstone {
        return None;
    }
    Some(KeyValue {
        key: key.clone(),
        create_revision: pb.create_revision,
        mod_revision: pb.mod_revision,
        version: pb.version,
        value: pb.value.clone(),
        lease: pb.lease,
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Holds the data directory's lock for as long as the store is open.
pub(crate) struct DirLock {
    _file: File,
}

impl Wal {
    /// Opens (or creates) the data directory and rebuilds the store from it.
    pub fn open(dir: &Path, now: Instant) -> Result<(Wal, Store, DirLock), OpenError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(OpenError::Io {
                    path: lock_path,
                    source: e,
                });
            }
        }
        let snap_path = dir.join("snapshot");
        let wal_path = dir.join("wal");
        if !snap_path.exists() {
            if wal_path.metadata().map(|m| m.len() > 0).unwrap_or(false) {
                return Err(OpenError::Corrupt {
                    path: wal_path,
                    reason: "a write-ahead log without its snapshot".into(),
                });
            }
            let meta = Meta {
                member_id: rand::random::<u64>() | 1,
                cluster_id: rand::random::<u64>() | 1,
            };
            write_snapshot(dir, &Store::new(), meta).map_err(io_err(&snap_path))?;
        }
        let mut data = Vec::new();
        File::open(&snap_path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io_err(&snap_path))?;
        let (fr, used) = frames(&data);
        if fr.len() != 1 || used != data.len() {
            return Err(OpenError::Corrupt {
                path: snap_path,
                reason: "checksum mismatch or truncated file".into(),
            });
        }
        let snap = PbSnapshot::decode(fr[0]).map_err(|e| OpenError::Corrupt {
            path: snap_path.clone(),
            reason: e.to_string(),
        })?;
        let meta = Meta {
            member_id: snap.member_id,
            cluster_id: snap.cluster_id,
        };
        let mut store = Store::new();
        let keys = snap
            .keys
            .iter()
            .map(|h| {
                let hist = h
                    .versions
                    .iter()
                    .map(|v| {
                        (
                            Rev {
                                rev: v.mod_revision,
                                kv: kv_from_pb(&h.key, v),
                            },
                            v.sub,
                        )
                    })
                    .collect::<Vec<_>>();
                (h.key.clone(), hist)
            })
            .collect();
        for l in &snap.leases {
            store.lessor.grant(l.id, l.ttl, now);
        }
        store.load(keys, snap.revision, snap.compact_revision);
        store.applied_index = snap.index;

        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&wal_path)
            .map_err(io_err(&wal_path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err(&wal_path))?;
        let (fr, used) = frames(&data);
        let mut replayed = 0usize;
        for payload in fr {
            let pb = PbRecord::decode(payload).map_err(|e| OpenError::Corrupt {
                path: wal_path.clone(),
                reason: e.to_string(),
            })?;
            if pb.index <= store.applied_index {
                continue;
            }
            let rec = Record {
                revision: pb.revision,
                changes: pb
                    .changes
                    .iter()
                    .map(|c| Change {
                        key: c.key.clone(),
                        kv: kv_from_pb(&c.key, c),
                    })
                    .collect(),
                lease_grants: pb.lease_grants.iter().map(|l| (l.id, l.ttl)).collect(),
                lease_revokes: pb.lease_revokes.clone(),
                compact: pb.compact,
            };
            store.replay(&rec, now);
            store.applied_index = pb.index;
            replayed += 1;
        }
        if used != data.len() {
            tracing::warn!(
                path = %wal_path.display(),
                cut = data.len() - used,
                "write-ahead log ends in an incomplete record (a write cut by a crash, never acknowledged); cutting it off"
            );
            file.set_len(used as u64).map_err(io_err(&wal_path))?;
            file.sync_all().map_err(io_err(&wal_path))?;
        }
        store.lessor.refresh_all(now);
        tracing::info!(dir = %dir.display(), revision = store.rev, replayed, "cache data directory opened");
        sync_dir(dir).map_err(io_err(dir))?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            file,
            size: used as u64,
            meta,
            buf: Vec::new(),
        };
        Ok((wal, store, DirLock { _file: lock_file }))
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends records (`index` is the store's applied index after each) and
    /// fsyncs them: when this returns Ok, they survive a crash.
    pub fn append(&mut self, recs: &[(u64, &Record)]) -> std::io::Result<()> {
        self.buf.clear();
        let mut payload = Vec::new();
        for (index, rec) in recs {
            let pb = PbRecord {
                index: *index,
                revision: rec.revision,
                changes: rec
                    .changes
                    .iter()
                    .map(|c| kv_to_pb(&c.key, &c.kv, rec.revision, 0, true))
                    .collect(),
                lease_grants: rec
                    .lease_grants
                    .iter()
                    .map(|(id, ttl)| PbLease { id: *id, ttl: *ttl })
                    .collect(),
                lease_revokes: rec.lease_revokes.clone(),
                compact: rec.compact,
            };
            payload.clear();
            pb.encode(&mut payload).expect("a Vec grows as needed");
            frame(&payload, &mut self.buf);
        }
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        self.size += self.buf.len() as u64;
        Ok(())
    }

    /// Writes a snapshot of `store` and empties the log.
    pub fn snapshot(&mut self, store: &Store) -> std::io::Result<()> {
        write_snapshot(&self.dir, store, self.meta)?;
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.size = 0;
        Ok(())
    }
}

fn write_snapshot(dir: &Path, store: &Store, meta: Meta) -> std::io::Result<()> {
    let subs = store.sub_revisions();
    let keys = store
        .histories()
        .map(|(k, hist)| PbHistory {
            key: k.clone(),
            versions: hist
                .iter()
                .map(|r| {
                    let sub = subs.get(&(k.clone(), r.rev)).copied().unwrap_or(0);
                    kv_to_pb(k, &r.kv, r.rev, sub, false)
                })
                .collect(),
        })
        .collect();
    let mut leases: Vec<PbLease> = store
        .lessor
        .leases
        .iter()
        .map(|(id, l)| PbLease {
            id: *id,
            ttl: l.ttl,
        })
        .collect();
    leases.sort_by_key(|l| l.id);
    let snap = PbSnapshot {
        index: store.applied_index,
        revision: store.rev,
        compact_revision: store.compact_rev,
        keys,
        leases,
        member_id: meta.member_id,
        cluster_id: meta.cluster_id,
    };
    let payload = snap.encode_to_vec();
    let mut out = Vec::with_capacity(payload.len() + 8);
    frame(&payload, &mut out);
    let tmp = dir.join("snapshot.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("snapshot"))?;
    sync_dir(dir)
}
