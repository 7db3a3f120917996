//! Ctrl-C (SIGINT) for `owl run`: while a reply is being generated it sets the engine's
//! cancel flag (the reply stops after the current token, the session stays usable); at
//! any other time it ends the program with status 130, as the default action would, but
//! after a newline so that the shell prompt starts on a fresh line.
//!
//! The handler only touches atomics and calls `write`/`_exit`, which are
//! async-signal-safe (signal-safety(7)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Set by the handler while [`REPLYING`]; the engine polls it before every token.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C should stop a reply rather than end the program.
static REPLYING: AtomicBool = AtomicBool::new(false);

static INSTALL: Once = Once::new();

/// The exit status of a program ended by Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

extern "C" fn on_sigint(_signal: libc::c_int) {
    if REPLYING.load(Ordering::SeqCst) {
        CANCEL.store(true, Ordering::SeqCst);
    } else {
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is static.
        unsafe {
            let _ = libc::write(libc::STDOUT_FILENO, b"\n".as_ptr().cast(), 1);
            libc::_exit(EXIT_INTERRUPTED);
        }
    }
}

/// Installs the handler (once per process).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: the sigaction struct is zero-initialised then filled; the handler is an
        // `extern "C" fn(c_int)` that only does async-signal-safe work. SA_RESTART keeps
        // reads from stdin going when a signal lands during one.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            // Failure leaves Ctrl-C's default action (end the program), which is acceptable.
            let _ = libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        }
    });
}

/// Marks the start of a reply: Ctrl-C now cancels it. Clears an earlier cancellation.
pub fn begin_reply() {
    CANCEL.store(false, Ordering::SeqCst);
    REPLYING.store(true, Ordering::SeqCst);
}

/// Marks the end of a reply: Ctrl-C ends the program again. Returns whether the reply
/// was cancelled.
pub fn end_reply() -> bool {
    REPLYING.store(false, Ordering::SeqCst);
    CANCEL.swap(false, Ordering::SeqCst)
}
