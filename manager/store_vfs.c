/*
 * store_vfs.c - the store's VFS: sqlite's own (unix) VFS, except that a
 * transaction's WAL frames reach the WAL file in one write instead of two
 * per frame.
 *
 * sqlite writes each WAL frame as two pwrite()s, its 24-byte header and
 * then its page; a commit of six pages is twelve system calls. On the
 * virtual machines cfm runs on a system call costs a microsecond or more
 * before it does anything, and an event hop commits two transactions at
 * each site (docs/performance.md, "Session 5"). Here the WAL file's
 * writes that follow one another are kept in memory and written together
 * when the commit frame's page arrives: the commit frame is the one whose
 * header carries the database size after the commit (bytes 4-7, zero in
 * every other frame; https://www.sqlite.org/fileformat2.html#walformat).
 * That write is the last of sqlite3WalFrames before it publishes the
 * commit in the WAL index, so other connections (other processes
 * included) never see a commit whose frames are not in the file, and a
 * failed write fails the commit, as a failed pwrite() does.
 *
 * Everything else flushes what is kept first: a read of the WAL, a sync,
 * a truncation, asking its size, closing it, and the WAL index's memory
 * barrier on the main database file (a safety net: sqlite publishes a
 * commit right after it). Nothing changes for the database file, the WAL
 * index or rollback journals.
 */
#include "store_int.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define VFS_NAME "cfm-walbatch"
#define WAL_HEADER 32           /* the WAL file's own header */
#define FRAME_HEADER 24         /* each frame's header */
#define BATCH_MAX (1024 * 1024) /* a transaction's frames beyond this are written as they go */
/* The unix VFS writes at most 128 KiB - 1 bytes in one call (it masks the
 * length with 0x1ffff, so 128 KiB exactly would write nothing): what is
 * kept goes out in pieces of this size. */
#define WRITE_MAX (64 * 1024)

struct vfile {
    sqlite3_file base;  /* pMethods: &methods; first, as sqlite wants */
    sqlite3_file *real; /* the unix VFS's file, right after this struct */
    struct vfile *wal;  /* main database: its WAL, while open */
    struct vfile *main; /* WAL: its main database file */
    bool is_wal;
    bool commit_next;   /* the commit frame's header came: its page is next */
    unsigned char *buf; /* consecutive writes not yet in the file */
    size_t len, cap;
    sqlite3_int64 at;   /* where buf[0] goes */
};

static sqlite3_vfs vfs;
static sqlite3_vfs *base_vfs;
static const sqlite3_io_methods methods;

/* Writes data (n bytes) at off, WRITE_MAX at a time. */
static int write_through(struct vfile *f, const unsigned char *data, size_t n, sqlite3_int64 off)
{
    int rc = SQLITE_OK;

    for (size_t done = 0; done < n && rc == SQLITE_OK;) {
        size_t piece = n - done < WRITE_MAX ? n - done : WRITE_MAX;
        rc = f->real->pMethods->xWrite(f->real, data + done, (int)piece,
                                        off + (sqlite3_int64)done);
        done += piece;
    }
    return rc;
}

static int flush(struct vfile *f)
{
    int rc;

    if (f->len == 0)
        return SQLITE_OK;
    rc = write_through(f, f->buf, f->len, f->at);
    f->len = 0; /* a failed write fails its commit; what it held is not committed */
    return rc;
}

static int x_close(sqlite3_file *file)
{
    struct vfile *f = (struct vfile *)file;
    int rc = flush(f), rc2;

    if (f->main && f->main->wal == f)
        f->main->wal = NULL;
    if (f->wal && f->wal->main == f)
        f->wal->main = NULL;
    free(f->buf);
    f->buf = NULL;
    rc2 = f->real->pMethods->xClose(f->real);
    return rc != SQLITE_OK ? rc : rc2;
}

static int x_read(sqlite3_file *file, void *out, int n, sqlite3_int64 off)
{
    struct vfile *f = (struct vfile *)file;
    int rc = flush(f);

    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, out, n, off);
}

/* Keeps data for the write at off, after what is kept when it follows it. */
static int keep(struct vfile *f, const void *data, size_t n, sqlite3_int64 off)
{
    int rc;

    if (f->len > 0 && (off != f->at + (sqlite3_int64)f->len || f->len + n > BATCH_MAX) &&
        (rc = flush(f)) != SQLITE_OK)
        return rc;
    if (n > BATCH_MAX)
        return write_through(f, data, n, off);
    if (f->len + n > f->cap) {
        size_t cap = f->cap ? f->cap : 64 * 1024;
        unsigned char *p;
        while (cap < f->len + n)
            cap *= 2;
        if (!(p = realloc(f->buf, cap))) {
            /* No memory to keep it: write what is kept and this now. */
            if ((rc = flush(f)) != SQLITE_OK)
                return rc;
            return write_through(f, data, n, off);
        }
        f->buf = p;
        f->cap = cap;
    }
    if (f->len == 0)
        f->at = off;
    memcpy(f->buf + f->len, data, n);
    f->len += n;
    return SQLITE_OK;
}

static int x_write(sqlite3_file *file, const void *data, int n, sqlite3_int64 off)
{
    struct vfile *f = (struct vfile *)file;
    const unsigned char *b = data;
    int rc;

    if (!f->is_wal || n <= 0)
        return f->real->pMethods->xWrite(f->real, data, n, off);
    if ((rc = keep(f, data, (size_t)n, off)) != SQLITE_OK)
        return rc;
    if (f->commit_next) {
        f->commit_next = false;
        return flush(f);
    }
    if (n == FRAME_HEADER && off >= WAL_HEADER && (b[4] | b[5] | b[6] | b[7]) != 0)
        f->commit_next = true;
    return SQLITE_OK;
}

static int x_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    struct vfile *f = (struct vfile *)file;
    int rc = flush(f);

    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int x_sync(sqlite3_file *file, int flags)
{
    struct vfile *f = (struct vfile *)file;
    int rc = flush(f);

    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int x_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    struct vfile *f = (struct vfile *)file;
    int rc = flush(f);

    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int x_lock(sqlite3_file *file, int lock)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xLock(f->real, lock);
}

static int x_unlock(sqlite3_file *file, int lock)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xUnlock(f->real, lock);
}

static int x_check_reserved(sqlite3_file *file, int *out)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int x_file_control(sqlite3_file *file, int op, void *arg)
{
    struct vfile *f = (struct vfile *)file;
    int rc;

    /* The VFS's name chain, for PRAGMA vfs_list and sqlite3_file_control. */
    if (op == SQLITE_FCNTL_VFSNAME) {
        int rc2 = f->real->pMethods->xFileControl(f->real, op, arg);
        if (rc2 == SQLITE_OK && *(char **)arg) {
            char *name = sqlite3_mprintf("%s/%z", VFS_NAME, *(char **)arg);
            *(char **)arg = name;
        } else {
            *(char **)arg = sqlite3_mprintf("%s", VFS_NAME);
        }
        return SQLITE_OK;
    }
    if ((rc = flush(f)) != SQLITE_OK)
        return rc;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int x_sector_size(sqlite3_file *file)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int x_device_characteristics(sqlite3_file *file)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int x_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **out)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xShmMap(f->real, page, size, extend, out);
}

static int x_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void x_shm_barrier(sqlite3_file *file)
{
    struct vfile *f = (struct vfile *)file;

    /* sqlite publishes a commit in the WAL index after this barrier: its
     * frames must be in the file by then (they are: the commit frame's
     * page flushed them; this catches a WAL written some other way). */
    if (f->wal && flush(f->wal) != SQLITE_OK)
        sqlite3_log(SQLITE_IOERR_WRITE, "%s: a WAL write before a barrier failed", VFS_NAME);
    f->real->pMethods->xShmBarrier(f->real);
}

static int x_shm_unmap(sqlite3_file *file, int delete_flag)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int x_fetch(sqlite3_file *file, sqlite3_int64 off, int n, void **out)
{
    struct vfile *f = (struct vfile *)file;
    int rc = flush(f);

    return rc != SQLITE_OK ? rc : f->real->pMethods->xFetch(f->real, off, n, out);
}

static int x_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    struct vfile *f = (struct vfile *)file;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

static const sqlite3_io_methods methods = {
    .iVersion = 3,
    .xClose = x_close,
    .xRead = x_read,
    .xWrite = x_write,
    .xTruncate = x_truncate,
    .xSync = x_sync,
    .xFileSize = x_file_size,
    .xLock = x_lock,
    .xUnlock = x_unlock,
    .xCheckReservedLock = x_check_reserved,
    .xFileControl = x_file_control,
    .xSectorSize = x_sector_size,
    .xDeviceCharacteristics = x_device_characteristics,
    .xShmMap = x_shm_map,
    .xShmLock = x_shm_lock,
    .xShmBarrier = x_shm_barrier,
    .xShmUnmap = x_shm_unmap,
    .xFetch = x_fetch,
    .xUnfetch = x_unfetch,
};

static int x_open(sqlite3_vfs *self, const char *name, sqlite3_file *file, int flags, int *out)
{
    struct vfile *f = (struct vfile *)file;
    int rc;

    (void)self;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    rc = base_vfs->xOpen(base_vfs, name, f->real, flags, out);
    if (rc != SQLITE_OK || !f->real->pMethods) {
        f->base.pMethods = NULL; /* nothing for sqlite to close */
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    if (f->real->pMethods->iVersion < 3) {
        /* Not the unix VFS's files as this file knows them (no WAL index
         * methods to pass on): refuse rather than guess. */
        sqlite3_log(SQLITE_CANTOPEN, "%s: %s: file methods version %d, 3 needed", VFS_NAME,
                    name ? name : "(temporary)", f->real->pMethods->iVersion);
        f->real->pMethods->xClose(f->real);
        f->base.pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    if ((flags & SQLITE_OPEN_WAL) && name) {
        sqlite3_file *db = sqlite3_database_file_object(name);
        f->is_wal = true;
        if (db && db->pMethods == &methods) {
            f->main = (struct vfile *)db;
            f->main->wal = f;
        }
    }
    f->base.pMethods = &methods;
    return SQLITE_OK;
}

static void register_vfs(void)
{
    base_vfs = sqlite3_vfs_find(NULL);
    if (!base_vfs)
        return;
    vfs = *base_vfs; /* every other method is the unix VFS's own */
    vfs.zName = VFS_NAME;
    vfs.szOsFile = (int)sizeof(struct vfile) + base_vfs->szOsFile;
    vfs.pNext = NULL;
    vfs.xOpen = x_open;
    if (sqlite3_vfs_register(&vfs, 0) != SQLITE_OK)
        base_vfs = NULL;
}

const char *cfm_store__vfs(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, register_vfs);
    return base_vfs ? VFS_NAME : NULL;
}
