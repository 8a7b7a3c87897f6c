//! A filesystem that loses what was not synced: the power-loss tests' layer under a
//! validator's data directory (the idea of Jepsen's LazyFS).
//!
//! `kill -9` keeps the kernel's page cache, so a write the process never synced survives
//! it and a missing fsync goes unseen. [`LazyFs`] is mounted (FUSE, in the test process)
//! over a backing directory and keeps every file's written bytes in its own memory until
//! that file is fsynced; [`LazyFs::power_cut`] drops whatever was not synced, as a
//! machine that loses power drops its page cache.
//!
//! The model, and what it does not catch:
//! - A file's contents (write, truncate, fallocate) reach the backing directory only at
//!   fsync or fdatasync of that file. Closing a file syncs nothing.
//! - Names (create, mkdir, rename, link, unlink, rmdir) reach it at once, as on a
//!   journaling filesystem that commits directory operations before data. A missing
//!   fsync of a directory is therefore not caught; a renamed file whose contents were
//!   never synced is (it comes back empty or short).
//! - Files opened by the test process itself go through the same layer.
//!
//! Needs root and `/dev/fuse` (the mount is the kernel's FUSE mount, no libfuse).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use nix::unistd::UnlinkatFlags;

/// The unit of unsynced data kept in memory.
const PAGE: u64 = 4096;
/// Attributes and names are never cached by the kernel: a power cut changes sizes
/// behind its back.
const TTL: Duration = Duration::ZERO;

/// What a power cut dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// Files that had unsynced changes.
    pub files: u64,
    /// Their unsynced pages, in bytes.
    pub bytes: u64,
}

/// Counters since the mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// fsync and fdatasync calls on files.
    pub syncs: u64,
    /// Bytes written to the backing directory by those syncs.
    pub synced_bytes: u64,
    /// Power cuts, and what they dropped in all.
    pub cuts: u64,
    pub lost: Cut,
}

/// A mounted lazy filesystem; dropping it unmounts it.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl std::fmt::Debug for LazyFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyFs")
            .field("mountpoint", &self.mountpoint)
            .finish()
    }
}

impl LazyFs {
    /// Mounts a lazy view of `backing` (a directory) at `mountpoint` (an empty
    /// directory).
    pub fn mount(backing: &Path, mountpoint: &Path) -> anyhow::Result<LazyFs> {
        let root = nix::fcntl::open(
            backing,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", backing.display()))?;
        let st = nix::sys::stat::fstat(&root)?;
        let mut inodes = HashMap::new();
        let mut by_key = HashMap::new();
        let key = (st.st_dev, st.st_ino);
        inodes.insert(
            INodeNo::ROOT.0,
            Inode {
                fd: root,
                key,
                lookups: 1,
                dirty: None,
            },
        );
        by_key.insert(key, INodeNo::ROOT.0);
        let state = Arc::new(Mutex::new(State {
            inodes,
            by_key,
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            counters: Counters::default(),
        }));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("stele-lazyfs".into()),
            MountOption::Subtype("lazyfs".into()),
            MountOption::RW,
        ];
        let session = fuser::spawn_mount(
            Fs {
                state: state.clone(),
            },
            mountpoint,
            &config,
        )
        .with_context(|| {
            format!(
                "mounting the power-loss filesystem at {} (FUSE: needs root and /dev/fuse)",
                mountpoint.display()
            )
        })?;
        Ok(LazyFs {
            state,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Drops every unsynced change, as a power cut drops the page cache. Whoever wrote
    /// through the mount must be dead first (a live writer would see its own writes
    /// vanish mid-run, which no real machine does).
    pub fn power_cut(&self) -> Cut {
        let (cut, inos) = {
            let mut s = lock(&self.state);
            let mut cut = Cut::default();
            for inode in s.inodes.values_mut() {
                if let Some(d) = inode.dirty.take() {
                    cut.files += 1;
                    cut.bytes += d.pages.len() as u64 * PAGE;
                }
            }
            s.inodes
                .retain(|&ino, i| i.lookups > 0 || ino == INodeNo::ROOT.0);
            let keys: std::collections::HashSet<_> = s.inodes.values().map(|i| i.key).collect();
            s.by_key.retain(|k, _| keys.contains(k));
            s.counters.cuts += 1;
            s.counters.lost.files += cut.files;
            s.counters.lost.bytes += cut.bytes;
            (cut, s.inodes.keys().copied().collect::<Vec<_>>())
        };
        // The kernel may hold pages of the lost data; outside the lock, since the
        // kernel may need the filesystem to answer while it invalidates.
        if let Some(session) = &self.session {
            let notifier = session.notifier();
            for ino in inos {
                let _ = notifier.inval_inode(INodeNo(ino), 0, -1);
            }
        }
        cut
    }

    pub fn counters(&self) -> Counters {
        lock(&self.state).counters
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic inside a handler leaves the maps usable; the test reports the panic.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

struct State {
    /// Our inode number → the backing inode.
    inodes: HashMap<u64, Inode>,
    /// (device, backing inode number) → our inode number, so hard links share one
    /// inode and one set of unsynced pages.
    by_key: HashMap<(u64, u64), u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    counters: Counters,
}

struct Inode {
    /// An O_PATH descriptor: follows the inode through renames, and keeps its number
    /// from being reused while we know it.
    fd: OwnedFd,
    key: (u64, u64),
    /// The kernel's references (lookups not yet forgotten).
    lookups: u64,
    /// Changes not yet synced; None when the backing file is the file.
    dirty: Option<Overlay>,
}

enum Handle {
    /// The backing file, read and write whatever the open asked for (the kernel
    /// checked the access mode).
    File(File),
    /// A directory's entries, read at opendir.
    Dir(Vec<(u64, FileType, std::ffi::OsString)>),
}

/// A file's unsynced state over its backing file.
struct Overlay {
    /// The file's size as its users see it.
    size: u64,
    /// Bytes of the backing file still part of the file (a truncation since the last
    /// sync hides the rest, which reads as zeros if the file grows again).
    base_len: u64,
    /// Written pages, whole.
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    fn over(backing_size: u64) -> Overlay {
        Overlay {
            size: backing_size,
            base_len: backing_size,
            pages: BTreeMap::new(),
        }
    }

    fn base_page(&self, file: &File, p: u64) -> std::io::Result<Box<[u8]>> {
        let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
        let start = p * PAGE;
        if start < self.base_len {
            let n = (self.base_len - start).min(PAGE) as usize;
            read_full_at(file, &mut page[..n], start)?;
        }
        Ok(page)
    }

    fn read(&self, file: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let p = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = ((PAGE - at % PAGE).min(end - at)) as usize;
            match self.pages.get(&p) {
                Some(page) => out.extend_from_slice(&page[within..within + n]),
                None => out.extend_from_slice(&self.base_page(file, p)?[within..within + n]),
            }
            at += n as u64;
        }
        Ok(out)
    }

    fn write(&mut self, file: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let p = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = rest.len().min(PAGE as usize - within);
            if !self.pages.contains_key(&p) {
                let base = self.base_page(file, p)?;
                self.pages.insert(p, base);
            }
            let page = self.pages.get_mut(&p).expect("inserted above");
            page[within..within + n].copy_from_slice(&rest[..n]);
            at += n as u64;
            rest = &rest[n..];
        }
        self.size = self.size.max(at);
        Ok(())
    }

    fn truncate(&mut self, size: u64) {
        self.size = size;
        self.base_len = self.base_len.min(size);
        self.pages.retain(|&p, _| p * PAGE < size);
        if !size.is_multiple_of(PAGE) {
            if let Some(page) = self.pages.get_mut(&(size / PAGE)) {
                page[(size % PAGE) as usize..].fill(0);
            }
        }
    }

    /// Writes the overlay into the backing file and syncs it; returns the bytes written.
    fn sync(&self, file: &File, data_only: bool) -> std::io::Result<u64> {
        file.set_len(self.base_len)?;
        file.set_len(self.size)?;
        let mut written = 0;
        for (&p, page) in &self.pages {
            let start = p * PAGE;
            let n = (self.size - start).min(PAGE) as usize;
            file.write_all_at(&page[..n], start)?;
            written += n as u64;
        }
        if data_only {
            file.sync_data()?;
        } else {
            file.sync_all()?;
        }
        Ok(written)
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break, // past the backing file's end: zeros
            n => done += n,
        }
    }
    Ok(())
}

fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn errno(e: nix::Error) -> Errno {
    Errno::from_i32(e as i32)
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr(ino: u64, st: &FileStat, dirty: Option<&Overlay>) -> FileAttr {
    let size = dirty.map_or(st.st_size as u64, |d| d.size);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: time(st.st_ctime, st.st_ctime_nsec),
        kind: kind(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: PAGE as u32,
        flags: 0,
    }
}

impl State {
    fn inode(&self, ino: INodeNo) -> Result<&Inode, Errno> {
        self.inodes.get(&ino.0).ok_or(Errno::ESTALE)
    }

    fn attr_of(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let i = self.inode(ino)?;
        let st = nix::sys::stat::fstat(&i.fd).map_err(errno)?;
        Ok(attr(ino.0, &st, i.dirty.as_ref()))
    }

    /// The kernel's lookup of `name` in `parent`: one more reference to its inode.
    fn lookup(&mut self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let dir = &self.inode(parent)?.fd;
        let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
        let key = (st.st_dev, st.st_ino);
        let ino = match self.by_key.get(&key) {
            Some(&ino) => ino,
            None => {
                let fd = nix::fcntl::openat(
                    dir,
                    name,
                    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno)?;
                let ino = self.next_ino;
                self.next_ino += 1;
                self.inodes.insert(
                    ino,
                    Inode {
                        fd,
                        key,
                        lookups: 0,
                        dirty: None,
                    },
                );
                self.by_key.insert(key, ino);
                ino
            }
        };
        let i = self.inodes.get_mut(&ino).expect("known or inserted");
        i.lookups += 1;
        Ok(attr(ino, &st, i.dirty.as_ref()))
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if ino == INodeNo::ROOT.0 {
            return;
        }
        let Some(i) = self.inodes.get_mut(&ino) else {
            return;
        };
        i.lookups = i.lookups.saturating_sub(n);
        // Unsynced changes outlive the kernel's interest: the file may be opened again
        // before the next sync or cut. An unlinked file's changes can never be read.
        let linked = nix::sys::stat::fstat(&i.fd).is_ok_and(|st| st.st_nlink > 0);
        if i.lookups == 0 && (i.dirty.is_none() || !linked) {
            let key = i.key;
            self.inodes.remove(&ino);
            self.by_key.remove(&key);
        }
    }

    fn open_backing(&self, ino: INodeNo) -> Result<File, Errno> {
        let i = self.inode(ino)?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(proc_path(&i.fd))
            .map_err(io_errno)
    }

    fn add_handle(&mut self, h: Handle) -> FileHandle {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, h);
        FileHandle(fh)
    }

    fn file(&self, fh: FileHandle) -> Result<&File, Errno> {
        match self.handles.get(&fh.0) {
            Some(Handle::File(f)) => Ok(f),
            _ => Err(Errno::EBADF),
        }
    }

    /// The inode's overlay, made over the backing file's current size if it had none.
    fn overlay(&mut self, ino: INodeNo) -> Result<&mut Overlay, Errno> {
        let i = self.inodes.get_mut(&ino.0).ok_or(Errno::ESTALE)?;
        if i.dirty.is_none() {
            let st = nix::sys::stat::fstat(&i.fd).map_err(errno)?;
            i.dirty = Some(Overlay::over(st.st_size as u64));
        }
        Ok(i.dirty.as_mut().expect("made above"))
    }

    fn truncate(&mut self, ino: INodeNo, size: u64) -> Result<(), Errno> {
        self.overlay(ino)?.truncate(size);
        Ok(())
    }

    fn read(&self, ino: INodeNo, fh: FileHandle, offset: u64, len: u64) -> Result<Vec<u8>, Errno> {
        let file = self.file(fh)?;
        match &self.inode(ino)?.dirty {
            Some(d) => d.read(file, offset, len).map_err(io_errno),
            None => {
                let mut buf = vec![0u8; len as usize];
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) => return Err(io_errno(e)),
                    }
                }
                buf.truncate(done);
                Ok(buf)
            }
        }
    }

    fn write(
        &mut self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let file = match self.handles.get(&fh.0) {
            Some(Handle::File(f)) => f.try_clone().map_err(io_errno)?,
            _ => return Err(Errno::EBADF),
        };
        self.overlay(ino)?
            .write(&file, offset, data)
            .map_err(io_errno)
    }

    fn fsync(&mut self, ino: INodeNo, fh: FileHandle, data_only: bool) -> Result<(), Errno> {
        let file = self.file(fh)?;
        let i = self.inode(ino)?;
        let written = match &i.dirty {
            Some(d) => d.sync(file, data_only).map_err(io_errno)?,
            None => {
                file.sync_all().map_err(io_errno)?;
                0
            }
        };
        self.inodes.get_mut(&ino.0).expect("looked up above").dirty = None;
        self.counters.syncs += 1;
        self.counters.synced_bytes += written;
        Ok(())
    }
}

struct Fs {
    state: Arc<Mutex<State>>,
}

impl Fs {
    fn s(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// unlink and rmdir: the name goes at once (names are durable in this model).
    fn remove(&self, parent: INodeNo, name: &OsStr, flag: UnlinkatFlags, reply: ReplyEmpty) {
        let s = self.s();
        let r = s
            .inode(parent)
            .and_then(|d| nix::unistd::unlinkat(&d.fd, name, flag).map_err(errno));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl fuser::Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.s().lookup(parent, name) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.s().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.s().attr_of(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.s();
        let r = (|| {
            if let Some(size) = size {
                s.truncate(ino, size)?;
            }
            if let Some(mode) = mode {
                let path = proc_path(&s.inode(ino)?.fd);
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(io_errno)?;
            }
            // Times and owners: nothing here reads them.
            s.attr_of(ino)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.s();
        let r = (|| {
            let dir = &s.inode(parent)?.fd;
            nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode & !umask))
                .map_err(errno)?;
            s.lookup(parent, name)
        })();
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.s();
        let r = (|| {
            let dir = &s.inode(parent)?.fd;
            // O_TRUNC is carried out in the overlay: a truncation is not durable either.
            let mut oflag = OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_CLOEXEC;
            if flags & libc::O_EXCL != 0 {
                oflag |= OFlag::O_EXCL;
            }
            let fd = nix::fcntl::openat(dir, name, oflag, Mode::from_bits_truncate(mode & !umask))
                .map_err(errno)?;
            let a = s.lookup(parent, name)?;
            if flags & libc::O_TRUNC != 0 && a.size > 0 {
                s.truncate(a.ino, 0)?;
            }
            let a = s.attr_of(a.ino)?;
            let fh = s.add_handle(Handle::File(File::from(fd)));
            Ok((a, fh))
        })();
        match r {
            Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.s();
        let r = (|| {
            let file = s.open_backing(ino)?;
            if flags.0 & libc::O_TRUNC != 0 {
                s.truncate(ino, 0)?;
            }
            Ok(s.add_handle(Handle::File(file)))
        })();
        match r {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.s().read(ino, fh, offset, u64::from(size)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.s().write(ino, fh, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.s().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.s().fsync(ino, fh, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.s();
        let r = (|| {
            let path = proc_path(&s.inode(ino)?.fd);
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for e in std::fs::read_dir(path).map_err(io_errno)? {
                let e = e.map_err(io_errno)?;
                let st = nix::sys::stat::lstat(&e.path()).map_err(errno)?;
                entries.push((st.st_ino, kind(st.st_mode), e.file_name()));
            }
            Ok(s.add_handle(Handle::Dir(entries)))
        })();
        match r {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.s();
        let Some(Handle::Dir(entries)) = s.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.s().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Names are durable at once in this model (see the module's comment).
        reply.ok();
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, UnlinkatFlags::NoRemoveDir, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, UnlinkatFlags::RemoveDir, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let s = self.s();
        let r = (|| {
            let from = &s.inode(parent)?.fd;
            let to = &s.inode(newparent)?.fd;
            nix::fcntl::renameat2(
                from,
                name,
                to,
                newname,
                nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
            )
            .map_err(errno)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = self.s();
        let r = (|| {
            let src = proc_path(&s.inode(ino)?.fd);
            let to = &s.inode(newparent)?.fd;
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                &src,
                to,
                newname,
                AtFlags::AT_SYMLINK_FOLLOW,
            )
            .map_err(errno)?;
            s.lookup(newparent, newname)
        })();
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.s();
        let r = s
            .inode(INodeNo::ROOT)
            .and_then(|i| nix::sys::statvfs::fstatvfs(i.fd.as_fd()).map_err(errno));
        match r {
            Ok(v) => reply.statfs(
                v.blocks(),
                v.blocks_free(),
                v.blocks_available(),
                v.files(),
                v.files_free(),
                v.block_size() as u32,
                v.name_max() as u32,
                v.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = match mode {
            // Reserving space changes no byte a reader sees.
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            0 => self.s().overlay(ino).map(|o| {
                o.size = o.size.max(offset.saturating_add(length));
            }),
            _ => Err(Errno::EOPNOTSUPP),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mounted {
        _dir: tempfile::TempDir,
        backing: PathBuf,
        fs: LazyFs,
    }

    fn mounted() -> Mounted {
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("backing");
        let at = dir.path().join("mnt");
        std::fs::create_dir(&backing).expect("backing");
        std::fs::create_dir(&at).expect("mountpoint");
        let fs = LazyFs::mount(&backing, &at).expect("mount");
        Mounted {
            _dir: dir,
            backing,
            fs,
        }
    }

    fn write(path: &Path, data: &[u8], sync: bool) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(data).expect("write");
        if sync {
            f.sync_all().expect("sync");
        }
    }

    #[test]
    fn unsynced_writes_are_lost_at_a_power_cut_and_synced_ones_kept() {
        let m = mounted();
        let at = m.fs.mountpoint().to_path_buf();
        let (a, b) = (at.join("a"), at.join("b"));
        write(&a, b"kept", true);
        write(&a, b" lost", false);
        write(&b, &[7u8; 10_000], false);
        // Until the cut, every reader sees every write (the page cache).
        assert_eq!(std::fs::read(&a).unwrap(), b"kept lost");
        assert_eq!(std::fs::read(&b).unwrap().len(), 10_000);
        assert_eq!(std::fs::read(m.backing.join("a")).unwrap(), b"kept");
        let cut = m.fs.power_cut();
        assert_eq!(cut.files, 2, "{cut:?}");
        assert_eq!(std::fs::read(&a).unwrap(), b"kept");
        // The name was durable, its contents were not.
        assert_eq!(std::fs::read(&b).unwrap(), b"");
        let c = m.fs.counters();
        assert_eq!((c.syncs, c.synced_bytes, c.cuts), (1, 4, 1), "{c:?}");
    }

    #[test]
    fn truncation_and_overwrites_come_back_after_a_cut_and_stay_after_a_sync() {
        let m = mounted();
        let p = m.fs.mountpoint().join("f");
        let base: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        write(&p, &base, true);
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(5000).unwrap();
        f.set_len(9000).unwrap();
        f.write_all_at(b"xyz", 4095).unwrap();
        let mut seen = base[..5000].to_vec();
        seen.resize(9000, 0);
        seen[4095..4098].copy_from_slice(b"xyz");
        assert_eq!(std::fs::read(&p).unwrap(), seen);
        m.fs.power_cut();
        assert_eq!(std::fs::read(&p).unwrap(), base);
        // The same changes, synced, survive the next cut, with the hidden tail zeroed.
        f.set_len(5000).unwrap();
        f.set_len(9000).unwrap();
        f.write_all_at(b"xyz", 4095).unwrap();
        f.sync_data().unwrap();
        m.fs.power_cut();
        assert_eq!(std::fs::read(&p).unwrap(), seen);
        assert_eq!(std::fs::read(m.backing.join("f")).unwrap(), seen);
    }

    #[test]
    fn renames_and_hard_links_carry_a_files_unsynced_state() {
        let m = mounted();
        let at = m.fs.mountpoint().to_path_buf();
        std::fs::create_dir(at.join("d")).unwrap();
        write(&at.join("d/tmp"), b"synced", true);
        write(&at.join("d/tmp"), b"+unsynced", false);
        std::fs::rename(at.join("d/tmp"), at.join("d/CURRENT")).unwrap();
        std::fs::hard_link(at.join("d/CURRENT"), at.join("linked")).unwrap();
        assert_eq!(
            std::fs::read(at.join("linked")).unwrap(),
            b"synced+unsynced"
        );
        let names: Vec<_> = std::fs::read_dir(at.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("CURRENT")]);
        m.fs.power_cut();
        assert_eq!(std::fs::read(at.join("d/CURRENT")).unwrap(), b"synced");
        assert_eq!(std::fs::read(at.join("linked")).unwrap(), b"synced");
        std::fs::remove_file(at.join("linked")).unwrap();
        std::fs::remove_file(at.join("d/CURRENT")).unwrap();
        std::fs::remove_dir(at.join("d")).unwrap();
        assert!(std::fs::read_dir(&m.backing).unwrap().next().is_none());
    }
}
