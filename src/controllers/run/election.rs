//! Stopping the controllers from within the process, and leader election through a Lease.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::controllers::rules::meta::MANAGER;

/// Stops the controllers from within the process (signals stop them too).
#[derive(Clone, Default)]
pub struct Stop(Arc<(tokio::sync::Notify, AtomicBool)>);

impl Stop {
    pub fn stop(&self) {
        self.0.1.store(true, Ordering::SeqCst);
        self.0.0.notify_waiters();
    }

    pub fn is_stopped(&self) -> bool {
        self.0.1.load(Ordering::SeqCst)
    }

    /// Resolves once `stop` was called.
    pub async fn wait(self) {
        loop {
            let notified = self.0.0.notified();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// Leader election through a Lease: only the holder runs the controllers.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// Seconds a holder keeps the lease without renewing it.
    pub lease_duration: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace: u64,
}

/// Waits to hold the lease, runs `work` while it is held (stopping it through the `Stop` it is given when the
/// lease is lost), and releases the lease on stop so another replica takes over at once. Returns when stopped, or
/// when leadership is lost (the caller should then exit).
pub async fn while_leader<F: Future<Output = ()>>(
    client: kube::Client,
    election: LeaderElection,
    stop: Stop,
    work: impl FnOnce(Stop) -> F,
) -> Result<(), kube_lease_manager::LeaseManagerError> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_duration)
        .with_grace(election.grace)
        .with_field_manager(MANAGER)
        .build()
        .await?;
    let (mut leader, task) = manager.watch().await;
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting for leadership");
    let became_leader = async {
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return false;
            }
        }
        true
    };
    let acquired = tokio::select! {
        acquired = became_leader => acquired,
        () = stop.clone().wait() => false,
    };
    if acquired {
        tracing::info!(identity = %election.identity, "acquired leadership; starting controllers");
        let inner = Stop::default();
        let lost = {
            let inner = inner.clone();
            let mut leader = leader.clone();
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = leader.wait_for(|held| !*held) => tracing::error!("lost leadership; stopping controllers"),
                    () = stop.wait() => {}
                }
                inner.stop();
            }
        };
        tokio::join!(work(inner), lost);
    }
    drop(leader);
    match task.await {
        Ok(Ok(manager)) => manager.release().await,
        Ok(Err(err)) => Err(err),
        Err(_) => Ok(()),
    }
}
