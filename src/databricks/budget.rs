//! One API budget per Databricks account: a token bucket (sustained rate and burst) and a limit on requests in
//! flight, shared by every object that uses the account.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// A token bucket plus a concurrency limit.
#[derive(Debug, Clone)]
pub struct Budget {
    bucket: Arc<Mutex<Bucket>>,
    in_flight: Arc<Semaphore>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

/// Held while a request is in flight.
#[derive(Debug)]
pub struct Permit {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Budget {
    /// `rate` requests per second sustained, `burst` at once after idling, `max_concurrency` in flight.
    pub fn new(rate: f64, burst: u32, max_concurrency: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            bucket: Arc::new(Mutex::new(Bucket {
                rate: rate.max(0.001),
                burst,
                tokens: burst,
                last: Instant::now(),
            })),
            in_flight: Arc::new(Semaphore::new(max_concurrency.max(1) as usize)),
        }
    }

    /// Waits for a token and a free slot.
    pub async fn acquire(&self) -> Permit {
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().await;
                let now = Instant::now();
                bucket.tokens = (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * bucket.rate)
                    .min(bucket.burst);
                bucket.last = now;
                // A hair of float error must not turn into a sub-millisecond sleep loop.
                if bucket.tokens >= 1.0 - 1e-9 {
                    bucket.tokens -= 1.0;
                    None
                } else {
                    Some(
                        Duration::from_secs_f64((1.0 - bucket.tokens) / bucket.rate)
                            .max(Duration::from_millis(1)),
                    )
                }
            };
            match wait {
                None => break,
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
        // The semaphore is never closed, so this only fails if it were (and then there is no limit to hold).
        Permit { _permit: self.in_flight.clone().acquire_owned().await.ok() }
    }

    /// Pauses the whole account's budget, as a 429 with `Retry-After` asks.
    pub async fn back_off(&self, wait: Duration) {
        let mut bucket = self.bucket.lock().await;
        // Spend into debt: no request starts until the bucket refills past zero.
        bucket.tokens = bucket.tokens.min(0.0) - wait.as_secs_f64() * bucket.rate;
        bucket.last = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_limits_the_sustained_rate() {
        let budget = Budget::new(10.0, 5, 4);
        let start = Instant::now();
        for _ in 0..25 {
            drop(budget.acquire().await);
        }
        // 5 from the burst, then 20 at 10 per second.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1_990) && elapsed < Duration::from_millis(2_100),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_pauses_everyone() {
        let budget = Budget::new(100.0, 100, 4);
        budget.back_off(Duration::from_secs(2)).await;
        let start = Instant::now();
        drop(budget.acquire().await);
        assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
    }
}
