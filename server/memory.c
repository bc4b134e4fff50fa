/* memory.c - server.max_memory_bytes: before a push, the server's tables plus what the push could
 * add must fit. A table with eviction "lru" makes room by evicting its own least recently pushed
 * rows; otherwise (or when that cannot make room) the push is refused with PS_TOO_LARGE, which
 * the peer gets as an Error while the connection and every other peer go on. */
#include "server_internal.h"

/* Eviction rounds before giving up: each evicts what the last estimate said was missing. */
#define MAKE_ROOM_ROUNDS 8

static size_t tables_bytes(const ps_server *srv) {
    size_t total = 0;
    for (size_t i = 0; i < srv->job->num_tables; i++) total += ps_store_bytes(srv->stores[i]);
    return total;
}

ps_status ps_server_make_room(ps_server *srv, uint32_t table, const uint8_t *keys, size_t n,
                              ps_error *err) {
    const uint64_t limit = srv->job->server_max_memory_bytes;
    if (limit == 0) return PS_OK;
    ps_store *st = srv->stores[table];
    const ps_table_spec *spec = ps_store_spec(st);
    size_t used = tables_bytes(srv), need = ps_store_push_growth(st, keys, n);
    size_t evicted = 0;
    for (int round = 0; used + need > limit && round < MAKE_ROOM_ROUNDS; round++) {
        if (spec->mem.eviction != PS_EVICT_LRU || ps_store_rows(st) == 0) break;
        /* freed places are reused by the push's new rows: a row's worth of bytes per row */
        const size_t row = ps_store_row_bytes(st);
        size_t want = (used + need - limit + row - 1) / row;
        if (want < 64) want = 64;
        size_t got = ps_store_evict_lru(st, want);
        if (got == 0) break;
        evicted += got;
        used = tables_bytes(srv), need = ps_store_push_growth(st, keys, n);
    }
    if (evicted > 0)
        ps_log(&srv->opt.log, PS_LOG_DEBUG, "table %s: evicted %zu rows (lru) for a push of %zu "
               "keys", spec->name, evicted, n);
    if (used + need <= limit) return PS_OK;
    return ps_error_set(err, PS_TOO_LARGE,
                        "Push to table \"%s\" refused: the server's tables hold %zu bytes and "
                        "this push of %zu keys may add %zu, past server.max_memory_bytes %llu "
                        "(eviction: %s%s)",
                        spec->name, used, n, need, (unsigned long long)limit,
                        spec->mem.eviction == PS_EVICT_LRU ? "lru" : "none",
                        spec->mem.eviction == PS_EVICT_LRU ? ", no more rows to evict" : "");
}
