//! Shell layer: the writer thread — the one owner of the [`Store`].
//!
//! The event loop hands it batches of [`Persist`] events ([`Writer::submit`]) and never waits
//! for them; the thread applies everything that has queued up as one transaction, in order,
//! and reports each result back, waking the loop through `notify` (the reactor's `Waker`).
//! [`Writer::finish`] closes the queue and waits until every batch is written: durable writes
//! finish before the process exits.

use super::{Persist, Store, StoreStatus};
use std::sync::mpsc;
use std::thread::JoinHandle;

pub struct Writer {
    tx: Option<mpsc::Sender<Vec<Persist>>>,
    results: mpsc::Receiver<(usize, Result<(), String>)>,
    thread: Option<JoinHandle<()>>,
    status: StoreStatus,
}

impl Writer {
    /// Start the thread; `notify` is called after each batch is written (or failed).
    pub fn start(
        mut store: Box<dyn Store>,
        status: StoreStatus,
        notify: Box<dyn Fn() + Send>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Vec<Persist>>();
        let (tell, results) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                while let Ok(mut batch) = rx.recv() {
                    while let Ok(more) = rx.try_recv() {
                        batch.extend(more);
                    }
                    let r = store.apply(&batch);
                    if let Err(e) = &r {
                        log::error!(
                            "durable state: a batch of {} changes failed: {e}",
                            batch.len()
                        );
                    }
                    if tell.send((batch.len(), r)).is_err() {
                        return;
                    }
                    notify();
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            results,
            thread: Some(thread),
            status,
        })
    }

    /// Queue a batch; it is written in the order submitted.
    pub fn submit(&self, batch: Vec<Persist>) {
        if batch.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(batch);
        }
    }

    /// Take in the results reported since the last call; the status if it changed.
    pub fn poll_status(&mut self) -> Option<StoreStatus> {
        let mut changed = false;
        while let Ok((n, r)) = self.results.try_recv() {
            changed = true;
            self.status.batches += 1;
            self.status.changes += n as u64;
            self.status.error = r.err();
        }
        changed.then(|| self.status.clone())
    }

    pub fn status(&self) -> &StoreStatus {
        &self.status
    }

    /// Close the queue and wait for every batch to be written.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.poll_status();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}
