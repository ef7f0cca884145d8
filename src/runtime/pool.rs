//! A persistent pool of worker threads for data-parallel kernels.
//!
//! In: a number of tasks and a function of the task index. Out: the function run once for
//! every index, spread over the workers and the calling thread; `run` returns when all are
//! done. Workers are started once and park between calls: no thread is created per kernel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// One call of [`Pool::run`]: its tasks are claimed through `next`, so a worker that wakes
/// late for an old job finds nothing left to claim and never touches its function.
struct Job {
    f: &'static (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    lock: Mutex<()>,
    finished: Condvar,
}

struct State {
    job: Option<Arc<Job>>,
    generation: u64,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A fixed set of worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl Pool {
    /// A pool using `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .filter_map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("netc-worker-{i}"))
                    .spawn(move || worker(s))
                    .ok()
            })
            .collect::<Vec<_>>();
        let threads = workers.len() + 1;
        Pool {
            shared,
            workers,
            threads,
        }
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
            lock: Mutex::new(()),
            finished: Condvar::new(),
        });
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.job = Some(job.clone());
            st.generation += 1;
        }
        self.shared.wake.notify_all();
        work(&job);
        let mut g = job.lock.lock().unwrap_or_else(|p| p.into_inner());
        while job.done.load(Ordering::Acquire) < tasks {
            g = job.finished.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        drop(g);
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
        if job.done.fetch_add(1, Ordering::AcqRel) + 1 == job.tasks {
            let _g = job.lock.lock().unwrap_or_else(|p| p.into_inner());
            job.finished.notify_all();
        }
    }
}

fn worker(s: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut st = s.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.shutdown {
                    return;
                }
                if st.generation != seen
                    && let Some(j) = &st.job
                {
                    seen = st.generation;
                    break j.clone();
                }
                st = s.wake.wait(st).unwrap_or_else(|p| p.into_inner());
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
        let pool = Pool::new(3);
        for round in 0..200 {
            let tasks = round % 13;
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
        }
    }
}
