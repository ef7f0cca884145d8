//! A persistent pool of worker threads for data-parallel kernels.
//!
//! In: a number of tasks and a function of the task index. Out: the function run once for
//! every index, spread over the workers and the calling thread; `run` returns when all are
//! done. Workers are started once: no thread is created per kernel. Between calls a worker
//! spins for a short while ([`SPIN`]) before it parks, and the caller spins before it sleeps
//! on the last task, because a training step runs dozens of kernels back to back and a
//! futex wake-up per kernel costs more than the small ones take (OpenMP runtimes, which
//! PyTorch uses, spin the same way, for far longer).
//!
//! The number of threads is bounded ([`max_threads`]: 4 × the cores, at most [`HARD_CAP`]),
//! and a pool that cannot start all its workers is an error (the ones started are stopped).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// No pool has more threads than this, whatever the machine.
pub const HARD_CAP: usize = 256;

/// The cores this process may use (1 when the system cannot tell).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most threads a pool may have: 4 × the cores (more only adds switching), at most
/// [`HARD_CAP`].
pub fn max_threads() -> usize {
    cores().saturating_mul(4).min(HARD_CAP)
}

/// The default number of threads: one per core (within [`max_threads`]).
pub fn default_threads() -> usize {
    cores().min(max_threads())
}

/// Checks a thread count against `1..=max_threads()`; the error says the limit and why.
pub fn check_threads(threads: usize) -> Result<usize, String> {
    let max = max_threads();
    if threads == 0 {
        return Err("the number of threads must be at least 1".to_string());
    }
    if threads > max {
        return Err(format!(
            "{threads} threads is more than the limit of {max} (4 × the {} cores available, \
             at most {HARD_CAP})",
            cores()
        ));
    }
    Ok(threads)
}

/// How long an idle worker, or a caller waiting for the last task, polls before sleeping.
const SPIN: Duration = Duration::from_micros(200);

/// Polls `ready` until it holds or [`SPIN`] has passed; whether it held.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() > SPIN {
            return ready();
        }
    }
}

/// One call of [`Pool::run`]: its tasks are claimed through `next`, so a worker that wakes
/// late for an old job finds nothing left to claim and never touches its function.
struct Job {
    f: &'static (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// Set by the caller before it sleeps on `finished`: only then does the last task's
    /// finisher need to wake it.
    waiting: AtomicBool,
    lock: Mutex<()>,
    finished: Condvar,
}

struct State {
    job: Option<Arc<Job>>,
    generation: u64,
    shutdown: bool,
    /// Workers asleep on `wake` (the caller notifies only when there are some).
    sleepers: usize,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// `state.generation`, readable without the lock by spinning workers.
    generation: AtomicU64,
}

/// Starts one worker thread (`std::thread::Builder::spawn`, or a test's stand-in).
type Spawn =
    dyn Fn(std::thread::Builder, Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>>;

/// A fixed set of worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl Pool {
    /// A pool using `threads` threads in all (the caller counts as one): an error when
    /// `threads` is outside `1..=max_threads()` or a worker cannot be started.
    pub fn new(threads: usize) -> Result<Pool, String> {
        Pool::start(threads, &|b, f| b.spawn(f))
    }

    /// [`Pool::new`] with the function that starts each worker (tests inject failures).
    fn start(threads: usize, spawn: &Spawn) -> Result<Pool, String> {
        let threads = check_threads(threads)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                shutdown: false,
                sleepers: 0,
            }),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
        });
        let mut pool = Pool {
            shared,
            workers: Vec::with_capacity(threads - 1),
            threads,
        };
        for i in 1..threads {
            let s = pool.shared.clone();
            let builder = std::thread::Builder::new().name(format!("netc-worker-{i}"));
            match spawn(builder, Box::new(move || worker(s))) {
                Ok(h) => pool.workers.push(h),
                // Dropping the pool stops and joins the workers already started.
                Err(e) => {
                    return Err(format!(
                        "cannot start worker thread {i} of {}: {e} (try fewer --threads)",
                        threads - 1
                    ));
                }
            }
        }
        Ok(pool)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for every `i` in `0..tasks` and waits for all of them.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if tasks == 1 || self.workers.is_empty() {
            (0..tasks).for_each(f);
            return;
        }
        // SAFETY: `f` is called only for claimed task indices below `tasks`, and we return only
        // after all `tasks` calls have finished; a worker holding this job afterwards can claim
        // nothing (every index is taken), so `f` is never called after its borrow ends.
        let f: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let job = Arc::new(Job {
            f,
            tasks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            finished: Condvar::new(),
        });
        let sleepers = {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.job = Some(job.clone());
            st.generation += 1;
            self.shared
                .generation
                .store(st.generation, Ordering::SeqCst);
            st.sleepers
        };
        if sleepers > 0 {
            self.shared.wake.notify_all();
        }
        work(&job);
        if !spin_until(|| job.done.load(Ordering::Acquire) >= tasks) {
            let mut g = job.lock.lock().unwrap_or_else(|p| p.into_inner());
            job.waiting.store(true, Ordering::SeqCst);
            while job.done.load(Ordering::SeqCst) < tasks {
                g = job.finished.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        }
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .job = None;
    }
}

fn work(job: &Job) {
    loop {
        let i = job.next.fetch_add(1, Ordering::AcqRel);
        if i >= job.tasks {
            break;
        }
        (job.f)(i);
        // SeqCst with the caller's `waiting` store and `done` load: either the caller sees
        // this increment before it sleeps, or this thread sees that it sleeps.
        if job.done.fetch_add(1, Ordering::SeqCst) + 1 == job.tasks
            && job.waiting.load(Ordering::SeqCst)
        {
            let _g = job.lock.lock().unwrap_or_else(|p| p.into_inner());
            job.finished.notify_all();
        }
    }
}

fn worker(s: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        // A new job usually follows within microseconds: poll before taking the lock.
        spin_until(|| s.generation.load(Ordering::Acquire) != seen);
        let job = {
            let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.shutdown {
                    return;
                }
                if st.generation != seen {
                    seen = st.generation;
                    if let Some(j) = &st.job {
                        break j.clone();
                    }
                    // That job has already finished; wait for the next.
                    continue;
                }
                st.sleepers += 1;
                st = s.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                st.sleepers -= 1;
            }
        };
        work(&job);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once() {
        let pool = Pool::new(3).unwrap();
        for round in 0..200 {
            let tasks = round % 13;
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
        }
    }

    /// Calls far enough apart that the workers park between them (and tasks long enough
    /// that the caller sleeps on the last one): the wake-ups must not be lost.
    #[test]
    fn parked_workers_and_a_sleeping_caller_wake_up() {
        let pool = Pool::new(2).unwrap();
        for round in 0..20 {
            std::thread::sleep(SPIN * 3);
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            pool.run(4, &|i| {
                if round % 2 == 0 {
                    std::thread::sleep(SPIN * 2);
                }
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
        }
    }

    /// A worker that cannot be started makes `new` fail (not a smaller pool, not a panic),
    /// and the workers started before it are stopped and joined.
    #[test]
    fn a_worker_that_cannot_start_is_an_error() {
        let started = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (s, f) = (started.clone(), finished.clone());
        let spawn = move |b: std::thread::Builder, work: Box<dyn FnOnce() + Send>| {
            if s.fetch_add(1, Ordering::SeqCst) == 2 {
                return Err(std::io::Error::other("Resource temporarily unavailable"));
            }
            let f = f.clone();
            b.spawn(move || {
                work();
                f.fetch_add(1, Ordering::SeqCst);
            })
        };
        // 4 threads (never above the limit: 4 × at least one core): workers 1, 2, 3.
        let Err(e) = Pool::start(4, &spawn) else {
            panic!("the pool started without its third worker");
        };
        assert!(e.contains("cannot start worker thread 3"), "{e}");
        assert!(e.contains("Resource temporarily unavailable"), "{e}");
        // The two workers that did start have exited.
        assert_eq!(finished.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn thread_counts_are_bounded() {
        let err = |n| Pool::new(n).err().expect("an error");
        assert!(err(0).contains("at least 1"));
        let e = err(usize::MAX);
        assert!(e.contains(&format!("limit of {}", max_threads())), "{e}");
        assert!(e.contains("cores available"), "{e}");
        assert!(max_threads() <= HARD_CAP && default_threads() <= max_threads());
        assert_eq!(Pool::new(max_threads()).unwrap().threads(), max_threads());
    }
}
