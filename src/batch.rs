//! Group commit, generically: callers hand in one item each and wait; a few flusher tasks take whatever has
//! queued up and handle it in one go, answering every caller.
//!
//! Nothing waits for company: a lone item is flushed at once, and batches form only while a flush is in
//! flight, that is when items arrive faster than they can be written. Used for submissions (one INSERT for
//! many jobs) and completions (one UPDATE + INSERT for many results).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

type Queue<T, R> = Arc<Mutex<mpsc::Receiver<(T, oneshot::Sender<R>)>>>;

/// Batches items of type `T` into calls of a flush function that answers each with an `R`.
pub struct Batcher<T, R> {
    queue: mpsc::Sender<(T, oneshot::Sender<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts `flushers` tasks that call `flush` with at most `max_batch` items at a time. `flush` must
    /// return one answer per item, in order. The tasks end when every clone of the batcher is dropped.
    pub fn start<F, Fut>(max_batch: usize, flushers: usize, flush: F) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (queue, receiver) = mpsc::channel(max_batch * flushers.max(1));
        let receiver: Queue<T, R> = Arc::new(Mutex::new(receiver));
        let flush = Arc::new(flush);
        for _ in 0..flushers.max(1) {
            tokio::spawn(run(receiver.clone(), flush.clone(), max_batch));
        }
        Batcher { queue }
    }

    /// Hands `item` to a flusher and waits for its answer; `None` when the flushers are gone (shutdown) or
    /// the flush never answered.
    pub async fn submit(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((item, reply)).await.ok()?;
        answer.await.ok()
    }
}

async fn run<T, R, F, Fut>(receiver: Queue<T, R>, flush: Arc<F>, max_batch: usize)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<R>>,
{
    loop {
        let mut items = Vec::new();
        let mut replies = Vec::new();
        {
            // One flusher collects at a time; the others are flushing meanwhile.
            let mut receiver = receiver.lock().await;
            let Some((item, reply)) = receiver.recv().await else {
                return;
            };
            items.push(item);
            replies.push(reply);
            while items.len() < max_batch {
                match receiver.try_recv() {
                    Ok((item, reply)) => {
                        items.push(item);
                        replies.push(reply);
                    }
                    Err(_) => break,
                }
            }
        }
        for (reply, answer) in replies.into_iter().zip(flush(items).await) {
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_caller_gets_its_own_answer_and_batches_form_under_load() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::start(10, 1, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(items.len());
                tokio::task::yield_now().await;
                items.into_iter().map(|n| n * 2).collect::<Vec<_>>()
            }
        });
        let calls: Vec<_> = (0..100u32)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (n, batcher.submit(n).await) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.unwrap();
            assert_eq!(answer, Some(n * 2));
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|&size| size <= 10));
        assert!(sizes.len() < 100, "some items shared a flush: {sizes:?}");
    }
}
