/* Lua states: every lua_State in vigil is made and closed here. Each VM has a capped allocator
 * (with a fail-the-Nth-allocation switch for fault-injection tests), a count hook that enforces
 * the active budget, and a pointer back to its owner found through lua_getextraspace. */
#pragma once

#include <lua.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vg_runtime vg_runtime_t;
typedef struct vg_task vg_task_t;
typedef struct vg_vm vg_vm_t;

/* Why code was stopped. Budget kills cannot be caught by pcall/xpcall. */
typedef enum {
  VG_KILL_NONE,
  VG_KILL_INSTRUCTIONS, /* instruction budget of the task spent */
  VG_KILL_SLICE,        /* ran too long without yielding */
  VG_KILL_MEMORY,       /* VM memory cap reached */
  VG_KILL_CANCELLED,    /* cancelled while running (self-cancel, shutdown) */
  VG_KILL_WATCHDOG,     /* the watchdog saw the loop stalled */
} vg_kill_t;

/* A budget is what the count hook enforces for the code running now: a task, a policy file
 * loading, a config file. */
typedef struct {
  uint64_t instr_used;
  uint64_t instr_limit; /* 0: unlimited */
  uint64_t slice_start; /* uv_hrtime() when this run slice began */
  uint64_t slice_ns;    /* 0: unlimited */
  vg_kill_t killed;
} vg_budget_t;

typedef struct {
  size_t memory;         /* bytes; 0: unlimited */
  uint64_t instructions; /* per task; 0: unlimited */
  uint64_t slice_ms;     /* max run time between two yields */
  uint64_t timeout_ms;   /* wall-clock deadline per task; 0: none */
} vg_limits_t;

/* Instructions between two hook calls. */
#define VG_HOOK_STEP 1000

struct vg_vm {
  lua_State *L;
  vg_runtime_t *rt;
  char *name;  /* policy name, "repl", "test:<file>", "config" */
  void *owner; /* the policy this VM runs, if any */
  vg_limits_t limits;

  size_t mem_used, mem_peak;
  uint64_t alloc_count;   /* allocations so far */
  uint64_t alloc_fail_at; /* fault injection: fail this allocation (1-based) and every later
                           * one, as a memory cap would; 0 = never */
  bool alloc_failed;

  vg_budget_t *budget;        /* enforced by the hook; NULL = trusted code, no limit */
  atomic_int interrupt;       /* a vg_kill_t requested from another thread (watchdog) */
  vg_task_t *current;         /* the task running now, or NULL */
  const char *noyield_reason; /* set while C calls Lua where it cannot yield */
#define VG_NOYIELD_MAX 16
  const char *noyield_stack[VG_NOYIELD_MAX]; /* outer reasons, for nested gsub callbacks */
  int noyield_depth;
  int ntasks;             /* live tasks */
  vg_task_t *tasks;       /* list of live tasks (intrusive, for cancel-all) */
  struct vg_every *every; /* periodic jobs owned by this VM (every.c) */
  bool draining;          /* old generation: finishing its tasks, no new work */
  void *drain;            /* its entry in the policy set's drain list */
  bool closing;
  bool quiet;           /* task failures log at debug (expected ones: sandbox specs) */
  int sandbox_base_ref; /* registry ref of the allowlisted globals (sandbox.c) */
  bool load_phase;      /* a chunk's top level runs: it may define globals */
  char *lib_dir;        /* where require("lib.x") looks (policies/lib) */
  uint32_t id_key;      /* keys the opaque ids tostring shows instead of addresses */
  /* Where print() goes: the REPL's output, or the log when NULL. */
  void (*print)(vg_vm_t *vm, const char *text, size_t len, void *ud);
  void *print_ud;
  uint64_t task_errors; /* tasks of this VM that failed or were killed */
  void (*on_task_end)(vg_vm_t *vm, vg_task_t *t, int status, const char *error);
};

/* Creates a VM with the standard libraries the sandbox builds on, the capped allocator, the
 * budget hook, a private cjson instance and the embedded-module searcher. Returns NULL on
 * allocation failure. */
vg_vm_t *vg_vm_new(vg_runtime_t *rt, const char *name, const vg_limits_t *limits);

/* Cancels the VM's tasks and timers and closes its Lua state. Tolerates a half-built VM. */
void vg_vm_free(vg_vm_t *vm);

/* The VM that owns L (any thread of it). */
vg_vm_t *vg_vm_of(lua_State *L);

/* The light userdata that marks an uncatchable budget error. */
void vg_vm_push_kill(lua_State *L);
bool vg_vm_is_kill(lua_State *L, int idx);

/* True when the running code has been killed: protected calls must re-raise. */
bool vg_vm_killed(lua_State *L);

/* Stops the running code at the next hook: marks the active budget and makes the hook fire on
 * every instruction. Safe to call from another thread (lua_sethook is signal-safe); the
 * watchdog uses it. */
void vg_vm_interrupt(vg_vm_t *vm, lua_State *running, vg_kill_t why);

/* Installs the budget hook on a new thread (every VG_HOOK_STEP instructions), or on a thread
 * that ended with an error and is about to be closed: then it also turns hooks back on, which
 * a kill raised from the hook leaves off, so its <close> handlers run under a budget. */
void vg_vm_arm_hook(lua_State *co);

/* Charges `steps` of C work (e.g. pattern matching, a table.move range) to the active budget;
 * raises the kill at once when the budget cannot cover them, so the caller never starts (or
 * continues) work that would run in C beyond the hook's reach. [-0, +0, v] */
void vg_vm_charge(lua_State *L, uint64_t steps);

/* Human-readable reason for a kill, e.g. "instruction budget exceeded (100000000)". */
const char *vg_kill_reason(vg_kill_t why, char *buf, size_t len);

/* Converts the error value at idx to text without running any metamethod. Never raises. */
const char *vg_vm_error_text(lua_State *L, int idx, char *buf, size_t len);

/* Protected call that also builds a traceback; on error leaves the message string (with
 * traceback) on the stack and returns the status. Errors never escape to a panic. */
int vg_vm_pcall(lua_State *L, int nargs, int nresults);

/* Message handler for lua_pcall while a file's top level runs under a budget (a config file, a
 * policy file): turns a budget kill into "file:line: loading stopped: <reason>", naming the
 * innermost Lua line that was running and the budget that stopped it. Other errors pass through
 * unchanged. The budget must still be the VM's when the handler runs. [-0, +1, m] */
int vg_vm_load_handler(lua_State *L);

/* Loads a chunk as text only (binary chunks are refused) into the function on the stack.
 * Returns a lua_load status; on error the message is on the stack. */
int vg_vm_load_text(lua_State *L, const char *src, size_t len, const char *chunkname);
