use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use tokio::time::timeout;

use super::*;

fn queue(config: QueueConfig) -> RequestQueue<u64> {
    RequestQueue::new(config)
}

fn sharded(max_queriers: usize, forget: Duration) -> QueueConfig {
    QueueConfig {
        max_queriers_per_tenant: max_queriers,
        querier_forget_delay: forget,
        ..QueueConfig::default()
    }
}

/// Enqueues and keeps the item queued after the guard goes away.
fn push(q: &RequestQueue<u64>, tenant: &str, item: u64) {
    q.enqueue(tenant, item, None).unwrap().detach();
}

// Runs under paused time: the timeout only fires once every task is idle,
// i.e. when the dequeue would block forever.
async fn next(q: &RequestQueue<u64>, h: &QuerierHandle) -> (String, u64) {
    let d = timeout(Duration::from_secs(3600), q.dequeue(h))
        .await
        .expect("dequeue blocked")
        .expect("queue stopped");
    (d.tenant.to_string(), d.item)
}

async fn blocks(q: &RequestQueue<u64>, h: &QuerierHandle) -> bool {
    timeout(Duration::from_secs(1), q.dequeue(h)).await.is_err()
}

async fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = Some(fut);
    std::future::poll_fn(|cx| Poll::Ready(fut.take().unwrap().poll(cx))).await
}

#[tokio::test(start_paused = true)]
async fn fifo_within_tenant() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    for i in 0..5 {
        push(&q, "a", i);
    }
    for i in 0..5 {
        assert_eq!(next(&q, &h).await, ("a".into(), i));
    }
    assert!(q.is_empty());
    assert!(blocks(&q, &h).await);
}

#[tokio::test(start_paused = true)]
async fn round_robin_across_tenants() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    for i in 0..10 {
        push(&q, "a", i);
    }
    push(&q, "b", 100);
    push(&q, "b", 101);
    let mut first4 = Vec::new();
    for _ in 0..4 {
        first4.push(next(&q, &h).await.1);
    }
    assert_eq!(first4, [0, 100, 1, 101]);
    for i in 2..10 {
        assert_eq!(next(&q, &h).await.1, i);
    }
}

#[tokio::test(start_paused = true)]
async fn new_tenant_joins_at_end_of_round() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    push(&q, "a", 1);
    push(&q, "a", 2);
    push(&q, "b", 1);
    push(&q, "b", 2);
    assert_eq!(next(&q, &h).await, ("a".into(), 1));
    push(&q, "c", 1);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&q, &h).await);
    }
    let expect = [("b", 1), ("c", 1), ("a", 2), ("b", 2)].map(|(t, i)| (t.to_string(), i));
    assert_eq!(got, expect);
    // An emptied tenant left the ring; coming back puts it at the end again.
    push(&q, "a", 3);
    push(&q, "d", 1);
    let tenants: Vec<_> = q
        .tenant_lengths()
        .into_iter()
        .map(|(t, n)| (t.to_string(), n))
        .collect();
    assert_eq!(tenants, [("a".to_string(), 1), ("d".to_string(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn cursor_is_per_querier() {
    let q = queue(QueueConfig::default());
    let h1 = q.register_querier("q1");
    let h1b = q.register_querier("q1");
    let h2 = q.register_querier("q2");
    for i in 0..3 {
        push(&q, "a", i);
        push(&q, "b", i);
    }
    // Connections of one querier share a cursor; another querier has its own.
    assert_eq!(next(&q, &h1).await, ("a".into(), 0));
    assert_eq!(next(&q, &h1b).await, ("b".into(), 0));
    assert_eq!(next(&q, &h2).await, ("a".into(), 1));
    assert_eq!(next(&q, &h1).await, ("a".into(), 2));
    assert_eq!(next(&q, &h2).await, ("b".into(), 1));
}

#[tokio::test(start_paused = true)]
async fn bound_per_tenant() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    for i in 0..100 {
        push(&q, "a", i);
    }
    assert_eq!(
        q.enqueue("a", 100, None).unwrap_err(),
        EnqueueError::TooManyRequests
    );
    assert_eq!(q.tenant_len("a"), 100);
    push(&q, "b", 0);
    assert_eq!(q.tenant_len("b"), 1);
    assert_eq!(q.len(), 101);
    assert_eq!(next(&q, &h).await, ("a".into(), 0));
    push(&q, "a", 100);
    assert_eq!(q.tenant_len("a"), 100);

    let unlimited = queue(QueueConfig {
        max_outstanding_per_tenant: 0,
        ..QueueConfig::default()
    });
    for i in 0..1000 {
        push(&unlimited, "a", i);
    }
    assert_eq!(unlimited.len(), 1000);
}

#[tokio::test(start_paused = true)]
async fn dropping_guard_removes_item_at_once() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    let g1 = q.enqueue("a", 1, None).unwrap();
    let g2 = q.enqueue("a", 2, None).unwrap();
    let g3 = q.enqueue("a", 3, None).unwrap();
    assert!(g2.is_queued());
    drop(g2);
    assert_eq!(q.len(), 2);
    assert_eq!(q.tenant_len("a"), 2);
    assert_eq!(next(&q, &h).await.1, 1);
    assert!(!g1.is_queued());
    assert!(!g1.cancel(), "already dequeued");
    assert!(g3.cancel());
    assert!(q.is_empty());
    assert!(q.tenant_lengths().is_empty());
    assert!(blocks(&q, &h).await);
}

#[tokio::test(start_paused = true)]
async fn expired_items_are_skipped() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    let now = Instant::now();
    let g1 = q
        .enqueue("a", 1, Some(now + Duration::from_secs(1)))
        .unwrap();
    push(&q, "a", 2);
    let g3 = q
        .enqueue("a", 3, Some(now + Duration::from_secs(10)))
        .unwrap();
    let g4 = q
        .enqueue("b", 4, Some(now + Duration::from_secs(1)))
        .unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(next(&q, &h).await, ("a".into(), 2));
    assert!(!g1.is_queued());
    assert_eq!(q.len(), 2, "b's expired item stays counted until met");
    // The round reaches b, drops its expired item and moves on to a.
    assert_eq!(next(&q, &h).await, ("a".into(), 3));
    assert!(!g3.is_queued());
    assert!(!g4.is_queued());
    assert!(q.is_empty());
    assert!(blocks(&q, &h).await);
}

#[tokio::test(start_paused = true)]
async fn a_federated_item_is_charged_to_each_of_its_tenants() {
    let q = queue(QueueConfig {
        max_outstanding_per_tenant: 2,
        ..QueueConfig::default()
    });
    let h = q.register_querier("q");
    push(&q, "a", 1);
    push(&q, "a|b", 2);
    let refused = |tenant: &str| q.enqueue(tenant, 9, None).unwrap_err();
    assert_eq!(
        refused("a"),
        EnqueueError::TooManyRequests,
        "a|b used a's room"
    );
    assert_eq!(refused("a|c"), EnqueueError::TooManyRequests);
    push(&q, "b", 3);
    assert_eq!(refused("b"), EnqueueError::TooManyRequests);
    assert_eq!(refused("b|c"), EnqueueError::TooManyRequests);
    push(&q, "c", 4);
    let tenants: Vec<String> = q
        .tenant_lengths()
        .iter()
        .map(|(tenant, _)| tenant.to_string())
        .collect();
    assert_eq!(
        tenants,
        vec!["a", "a|b", "b", "c"],
        "a refused new tenant (a|c, b|c) leaves no empty queue behind"
    );
    assert_eq!(next(&q, &h).await, ("a".into(), 1));
    assert_eq!(next(&q, &h).await, ("a|b".into(), 2));
    push(&q, "a|c", 5);
    push(&q, "a", 6);
    assert_eq!(refused("a"), EnqueueError::TooManyRequests);
}

#[tokio::test(start_paused = true)]
async fn expired_items_do_not_hold_places_under_the_limit() {
    let q = queue(QueueConfig {
        max_outstanding_per_tenant: 2,
        ..QueueConfig::default()
    });
    let deadline = Instant::now() + Duration::from_secs(1);
    q.enqueue("a", 1, Some(deadline)).unwrap().detach();
    q.enqueue("a", 2, Some(deadline)).unwrap().detach();
    assert_eq!(
        q.enqueue("a", 3, None).unwrap_err(),
        EnqueueError::TooManyRequests
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    push(&q, "a", 3);
    assert_eq!(q.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn stop_drains_then_returns_none() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    let idle = q.register_querier("idle");
    let sleeper = {
        let q = q.clone();
        tokio::spawn(async move { q.dequeue(&idle).await.map(|d| d.item) })
    };
    tokio::task::yield_now().await;
    q.stop();
    assert_eq!(
        sleeper.await.unwrap(),
        None,
        "sleeping dequeuer released by stop"
    );

    let q = queue(QueueConfig::default());
    let h2 = q.register_querier("q");
    push(&q, "a", 1);
    push(&q, "b", 2);
    q.stop();
    assert!(q.is_stopped());
    assert_eq!(q.enqueue("a", 3, None).unwrap_err(), EnqueueError::Stopped);
    assert_eq!(next(&q, &h2).await.1, 1);
    assert_eq!(next(&q, &h2).await.1, 2);
    assert!(q.dequeue(&h2).await.is_none());
    drop(h);
}

#[tokio::test(start_paused = true)]
async fn stop_drains_through_any_querier_despite_shards() {
    let q = queue(sharded(1, Duration::ZERO));
    let handles: Vec<_> = (0..4)
        .map(|i| q.register_querier(&format!("q{i}")))
        .collect();
    let member = q.tenant_queriers("a").unwrap()[0].to_string();
    let outsider = handles.iter().find(|h| h.querier_id() != member).unwrap();
    push(&q, "a", 1);
    assert!(blocks(&q, outsider).await);
    q.stop();
    assert_eq!(next(&q, outsider).await.1, 1);
    assert!(q.dequeue(outsider).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn shuffle_shard_confines_tenant_to_its_queriers() {
    let q = queue(sharded(2, Duration::from_secs(10)));
    let handles: Vec<_> = (0..5)
        .map(|i| q.register_querier(&format!("q{i}")))
        .collect();
    let shard = q.tenant_queriers("tenant-a").expect("sharding active");
    assert_eq!(shard.len(), 2);

    // Deterministic: another queue, queriers registered in another order.
    let q2 = queue(sharded(2, Duration::from_secs(10)));
    let _h2: Vec<_> = (0..5)
        .rev()
        .map(|i| q2.register_querier(&format!("q{i}")))
        .collect();
    assert_eq!(q2.tenant_queriers("tenant-a").unwrap(), shard);

    for i in 0..4 {
        push(&q, "tenant-a", i);
    }
    for h in &handles {
        if shard.iter().any(|m| **m == *h.querier_id()) {
            let (tenant, _) = next(&q, h).await;
            assert_eq!(tenant, "tenant-a");
        } else {
            assert!(
                blocks(&q, h).await,
                "{} is outside the shard",
                h.querier_id()
            );
        }
    }
    assert_eq!(q.len(), 2);

    // Fewer queriers than the shard size: everyone serves everyone.
    let small = queue(sharded(2, Duration::ZERO));
    let _a = small.register_querier("a");
    let _b = small.register_querier("b");
    assert!(small.tenant_queriers("tenant-a").is_none());
}

#[tokio::test(start_paused = true)]
async fn shard_stable_while_querier_reconnects_within_forget_delay() {
    let q = queue(sharded(2, Duration::from_secs(10)));
    let mut handles: Vec<_> = (0..5)
        .map(|i| Some(q.register_querier(&format!("q{i}"))))
        .collect();
    let shard = q.tenant_queriers("tenant-a").unwrap();
    let outsider = (0..5)
        .find(|i| !shard.iter().any(|m| **m == *format!("q{i}")))
        .unwrap();
    let member = (0..5)
        .find(|i| shard.iter().any(|m| **m == *format!("q{i}")))
        .unwrap();

    handles[outsider] = None;
    handles[member] = None;
    assert_eq!(q.connected_queriers(), 3);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(q.tenant_queriers("tenant-a").unwrap(), shard);
    handles[outsider] = Some(q.register_querier(&format!("q{outsider}")));
    handles[member] = Some(q.register_querier(&format!("q{member}")));
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(q.tenant_queriers("tenant-a").unwrap(), shard);
}

#[tokio::test(start_paused = true)]
async fn forgotten_querier_hands_its_tenants_to_sleeping_queriers() {
    let q = queue(sharded(2, Duration::from_secs(10)));
    let mut handles: Vec<_> = (0..5)
        .map(|i| Some(q.register_querier(&format!("q{i}"))))
        .collect();
    let shard = q.tenant_queriers("tenant-a").unwrap();
    let is_member = |h: &QuerierHandle| shard.iter().any(|m| **m == *h.querier_id());
    // Outsiders fall asleep before the members leave, so they must learn
    // about the pending forget without any further queue activity.
    let mut sleepers = Vec::new();
    for slot in handles.iter_mut() {
        if !is_member(slot.as_ref().unwrap()) {
            let h = slot.take().unwrap();
            let q = q.clone();
            sleepers.push(tokio::spawn(
                async move { q.dequeue(&h).await.map(|d| d.item) },
            ));
        }
    }
    tokio::task::yield_now().await;
    push(&q, "tenant-a", 42);
    handles.clear();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        q.tenant_len("tenant-a"),
        1,
        "waits for its shard within the forget delay"
    );

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(q.is_empty());
    let new_shard = q.tenant_queriers("tenant-a").unwrap();
    assert!(new_shard.iter().all(|m| !shard.contains(m)));
    let mut served = 0;
    for s in sleepers {
        if s.is_finished() {
            assert_eq!(s.await.unwrap(), Some(42));
            served += 1;
        } else {
            s.abort();
        }
    }
    assert_eq!(served, 1);
}

#[tokio::test(start_paused = true)]
async fn enqueue_wakes_a_waiter_in_the_shard() {
    let q = queue(sharded(1, Duration::ZERO));
    let handles: Vec<_> = (0..4)
        .map(|i| q.register_querier(&format!("q{i}")))
        .collect();
    let member = q.tenant_queriers("a").unwrap()[0].to_string();
    let mut tasks = Vec::new();
    // Outsiders go to sleep first, so a plain FIFO wakeup would pick one of them.
    let (inside, outside): (Vec<_>, Vec<_>) =
        handles.into_iter().partition(|h| h.querier_id() == member);
    for h in outside.into_iter().chain(inside) {
        let q = q.clone();
        let id = h.querier_id().to_string();
        tasks.push((
            id,
            tokio::spawn(async move { q.dequeue(&h).await.map(|d| d.item) }),
        ));
        tokio::task::yield_now().await;
    }
    push(&q, "a", 7);
    for (id, task) in tasks {
        if id == member {
            let got = timeout(Duration::from_secs(60), task)
                .await
                .expect("member not woken");
            assert_eq!(got.unwrap(), Some(7));
        } else {
            task.abort();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn dropped_dequeue_loses_nothing() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    {
        let mut fut = pin!(q.dequeue(&h));
        assert!(poll_once(fut.as_mut()).await.is_pending());
        push(&q, "a", 1);
        // Woken but never polled again: dropped holding the wakeup.
    }
    assert_eq!(q.len(), 1);
    assert_eq!(next(&q, &h).await.1, 1);
}

#[tokio::test(start_paused = true)]
async fn dropped_dequeue_passes_its_wakeup_on() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    let h2 = q.register_querier("q2");
    let mut first = Box::pin(q.dequeue(&h));
    assert!(poll_once(first.as_mut()).await.is_pending());
    let second = {
        let q = q.clone();
        tokio::spawn(async move { q.dequeue(&h2).await.map(|d| d.item) })
    };
    tokio::task::yield_now().await;
    // The oldest waiter is woken, then drops out without running.
    push(&q, "a", 9);
    drop(first);
    let got = timeout(Duration::from_secs(60), second)
        .await
        .expect("wakeup lost");
    assert_eq!(got.unwrap(), Some(9));
}

#[tokio::test(start_paused = true)]
async fn querier_shutdown_and_connection_counts() {
    let q = queue(QueueConfig::default());
    let a1 = q.register_querier("a");
    let a2 = q.register_querier("a");
    let b = q.register_querier("b");
    assert_eq!(
        (q.connected_queriers(), q.connected_querier_workers()),
        (2, 3)
    );
    drop(a1);
    assert_eq!(
        (q.connected_queriers(), q.connected_querier_workers()),
        (2, 2)
    );
    drop(a2);
    assert_eq!(
        (q.connected_queriers(), q.connected_querier_workers()),
        (1, 1)
    );

    push(&q, "t", 1);
    q.notify_querier_shutdown("b");
    assert!(q.dequeue(&b).await.is_none());
    assert_eq!(q.len(), 1);
    let c = q.register_querier("c");
    assert_eq!(next(&q, &c).await.1, 1);
}

/// Producers enqueue unique ids (cancelling some at once) while consumers,
/// some of whose dequeue futures are abandoned mid-wait, pull until stop.
/// Every id must end up dequeued or cancelled, exactly once.
async fn stress(config: QueueConfig) {
    const PRODUCERS: u64 = 8;
    const PER_PRODUCER: u64 = 2000;
    let q: RequestQueue<u64> = RequestQueue::new(config);

    let mut consumers = Vec::new();
    for c in 0..12u64 {
        let h = q.register_querier(&format!("querier-{}", c % 3));
        let q = q.clone();
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut round = 0u64;
            loop {
                round += 1;
                if round.is_multiple_of(5) {
                    tokio::select! {
                        biased;
                        d = q.dequeue(&h) => match d {
                            Some(d) => got.push(d.item),
                            None => break,
                        },
                        () = tokio::task::yield_now() => {}
                    }
                } else {
                    match q.dequeue(&h).await {
                        Some(d) => {
                            got.push(d.item);
                            // Hold the tenant's slot across a yield now and
                            // then, so the reserve blocks and wakes tenants.
                            if round.is_multiple_of(3) {
                                tokio::task::yield_now().await;
                            }
                            drop(d);
                        }
                        None => break,
                    }
                }
            }
            got
        }));
    }

    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let q = q.clone();
        producers.push(tokio::spawn(async move {
            let mut cancelled = Vec::new();
            for i in 0..PER_PRODUCER {
                let id = p * 1_000_000 + i;
                let tenant = format!("tenant-{}", (p + i) % 5);
                let guard = loop {
                    match q.enqueue(&tenant, id, None) {
                        Ok(g) => break g,
                        Err(EnqueueError::TooManyRequests) => tokio::task::yield_now().await,
                        Err(EnqueueError::Stopped) => unreachable!(),
                    }
                };
                if i.is_multiple_of(7) {
                    if guard.cancel() {
                        cancelled.push(id);
                    }
                } else {
                    guard.detach();
                }
                if i.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            cancelled
        }));
    }

    let mut seen = HashSet::new();
    for p in producers {
        for id in p.await.unwrap() {
            assert!(seen.insert(id), "cancelled twice: {id}");
        }
    }
    // Consumers must empty the queue before stop() (which wakes everyone)
    // could hide a lost wakeup.
    let started = std::time::Instant::now();
    while !q.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "stalled with {} queued",
            q.len()
        );
        tokio::task::yield_now().await;
    }
    q.stop();
    for c in consumers {
        for id in c.await.unwrap() {
            assert!(seen.insert(id), "duplicate: {id}");
        }
    }
    assert_eq!(seen.len() as u64, PRODUCERS * PER_PRODUCER);
    assert!(q.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stress_loses_and_duplicates_nothing() {
    stress(QueueConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stress_with_shuffle_sharding() {
    stress(sharded(1, Duration::ZERO)).await;
}

/// Items dequeued and held (their slots stay charged) by spawned dequeuers.
type Held = tokio::sync::mpsc::UnboundedReceiver<Dequeued<u64>>;

/// Spawns `n` dequeuers for `querier_id` that each take one item and send
/// it, slot held, to the returned channel.
fn spawn_holders(q: &RequestQueue<u64>, querier_id: &str, n: usize) -> Held {
    let (sender, held) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..n {
        let q = q.clone();
        let h = q.register_querier(querier_id);
        let sender = sender.clone();
        tokio::spawn(async move {
            if let Some(d) = q.dequeue(&h).await {
                let _ = sender.send(d);
            }
            // Keep the connection so shards and counts do not change.
            std::future::pending::<()>().await;
        });
    }
    held
}

/// Everything sent to `held` until the spawned dequeuers are all idle;
/// the caller keeps the slots charged for as long as it keeps the items.
async fn drain(held: &mut Held) -> Vec<Dequeued<u64>> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::iter::from_fn(|| held.try_recv().ok()).collect()
}

fn items(dequeued: &[Dequeued<u64>]) -> Vec<(&str, u64)> {
    dequeued.iter().map(|d| (&*d.tenant, d.item)).collect()
}

#[tokio::test(start_paused = true)]
async fn the_tenant_holding_fewest_slots_goes_first() {
    let q = queue(QueueConfig {
        reserved_slots: 0,
        ..QueueConfig::default()
    });
    let h = q.register_querier("q");
    for i in 0..3 {
        push(&q, "a", i);
        push(&q, "b", 10 + i);
        push(&q, "c", 20 + i);
    }
    let a0 = q.dequeue(&h).await.unwrap();
    let b0 = q.dequeue(&h).await.unwrap();
    assert_eq!((&*a0.tenant, &*b0.tenant), ("a", "b"));
    // `a` holds a slot: `c`, holding none, goes before it despite the round.
    drop(b0);
    assert_eq!(next(&q, &h).await, ("c".into(), 20));
    // `a` holds 1, `b` none: `b` first though `a` comes next in the round.
    let b1 = q.dequeue(&h).await.unwrap();
    assert_eq!(b1.item, 11);
    assert_eq!(q.tenant_in_flight("a"), 1);
    assert_eq!(q.tenant_in_flight("b"), 1);
    // Equal holdings: round robin from the cursor (after `b`: `c`, `a`).
    assert_eq!(next(&q, &h).await, ("c".into(), 21));
    drop((a0, b1));
    assert_eq!(q.tenant_in_flight("a"), 0);
    assert_eq!(next(&q, &h).await, ("a".into(), 1));
}

#[tokio::test(start_paused = true)]
async fn a_federated_slot_is_held_by_each_of_its_tenants() {
    let q = queue(QueueConfig {
        reserved_slots: 0,
        ..QueueConfig::default()
    });
    let h = q.register_querier("q");
    push(&q, "a|b", 1);
    push(&q, "a", 2);
    push(&q, "c", 3);
    push(&q, "b", 4);
    let federated = q.dequeue(&h).await.unwrap();
    assert_eq!(&*federated.tenant, "a|b");
    assert_eq!((q.tenant_in_flight("a"), q.tenant_in_flight("b")), (1, 1));
    // `a` and `b` each hold a slot through a|b: `c`, holding none, goes
    // first though `a` is next in the round.
    let c = q.dequeue(&h).await.unwrap();
    assert_eq!(c.item, 3);
    drop(c);
    // `a` and `b` hold one each: round robin from the cursor (after `c`).
    let b = q.dequeue(&h).await.unwrap();
    assert_eq!(b.item, 4);
    assert_eq!((q.tenant_in_flight("a"), q.tenant_in_flight("b")), (1, 2));
    drop((federated, b));
    assert_eq!((q.tenant_in_flight("a"), q.tenant_in_flight("b")), (0, 0));
    assert_eq!(next(&q, &h).await, ("a".into(), 2));
}

#[tokio::test(start_paused = true)]
async fn a_tenant_holding_slots_leaves_the_reserve_idle() {
    let q = queue(QueueConfig::default());
    for i in 0..10 {
        push(&q, "flood", i);
    }
    let mut held = spawn_holders(&q, "q", 4);
    let flood = drain(&mut held).await;
    // Four slots, one reserved: the flood holds three, one dequeuer waits.
    assert_eq!(items(&flood), [("flood", 0), ("flood", 1), ("flood", 2)]);
    assert_eq!(q.tenant_in_flight("flood"), 3);
    // Another tenant takes the reserved slot at once.
    push(&q, "quiet", 100);
    let quiet = drain(&mut held).await;
    assert_eq!(items(&quiet), [("quiet", 100)]);
    assert_eq!(q.tenant_len("flood"), 7);
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_wakes_a_dequeuer_its_tenant_was_blocked_from() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    for i in 0..3 {
        push(&q, "a", i);
    }
    let first = q.dequeue(&h).await.unwrap();
    // One slot held, one dequeuer: taking it would leave no slot idle.
    let waiting = q.dequeue(&h);
    tokio::pin!(waiting);
    assert!(poll_once(waiting.as_mut()).await.is_pending());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(poll_once(waiting.as_mut()).await.is_pending());
    // The slot is freed: `a` holds none, so the sleeper is woken and takes.
    drop(first);
    let second = timeout(Duration::from_secs(1), waiting)
        .await
        .expect("woken by the freed slot")
        .unwrap();
    assert_eq!(second.item, 1);
}

#[tokio::test(start_paused = true)]
async fn the_reserve_never_hands_a_tenant_to_a_querier_outside_its_shard() {
    let q = queue(QueueConfig {
        reserved_slots: 0,
        ..sharded(1, Duration::ZERO)
    });
    let h1 = q.register_querier("q1");
    let h2 = q.register_querier("q2");
    let member = q.tenant_queriers("a").unwrap()[0].clone();
    let (inside, outside) = if *member == *"q1" {
        (&h1, &h2)
    } else {
        (&h2, &h1)
    };
    for i in 0..3 {
        push(&q, "a", i);
    }
    let held = q.dequeue(inside).await.unwrap();
    // The outsider may not serve `a`, whatever `a` holds or leaves idle.
    assert!(blocks(&q, outside).await);
    assert_eq!(next(&q, inside).await, ("a".into(), 1));
    drop(held);
    assert!(blocks(&q, outside).await);
    assert_eq!(q.tenant_len("a"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_queue_drains_past_the_reserve() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    push(&q, "a", 0);
    push(&q, "a", 1);
    let _held = q.dequeue(&h).await.unwrap();
    assert!(blocks(&q, &h).await, "the reserve holds item 1 back");
    q.stop();
    assert_eq!(next(&q, &h).await, ("a".into(), 1));
    assert!(q.dequeue(&h).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_item_held_back_by_the_reserve_past_its_deadline_is_never_handed_out() {
    let q = queue(QueueConfig::default());
    let h = q.register_querier("q");
    push(&q, "a", 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    q.enqueue("a", 1, Some(deadline)).unwrap().detach();
    push(&q, "b", 2);
    let held = q.dequeue(&h).await.unwrap();
    // `a` holds a slot and only one dequeuer is left: `b`, holding none,
    // takes it; `a`'s next item waits behind the reserve.
    assert_eq!(next(&q, &h).await, ("b".into(), 2));
    assert!(blocks(&q, &h).await);
    tokio::time::advance(Duration::from_secs(10)).await;
    drop(held);
    // Its slot is free but its deadline passed: the owner has answered 503.
    assert!(blocks(&q, &h).await);
    assert!(q.is_empty());
}

/// Per-tenant limits read at every decision, so a runtime override that
/// changes them applies to the next enqueue and the next dequeue.
#[tokio::test(start_paused = true)]
async fn each_tenant_has_its_own_limits_and_a_change_applies_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let a_queriers = Arc::new(AtomicUsize::new(1));
    let seen = a_queriers.clone();
    let q = queue(QueueConfig {
        tenant_limits: Some(TenantLimitsFn(Arc::new(move |tenant: &str| match tenant {
            "a" => TenantQueueLimits {
                max_outstanding: 2,
                max_queriers: seen.load(Ordering::SeqCst),
            },
            _ => TenantQueueLimits {
                max_outstanding: 0,
                max_queriers: 0,
            },
        }))),
        ..QueueConfig::default()
    });
    let handles: Vec<_> = (0..4)
        .map(|i| q.register_querier(&format!("q{i}")))
        .collect();
    push(&q, "a", 1);
    push(&q, "a", 2);
    assert_eq!(
        q.enqueue("a", 3, None).unwrap_err(),
        EnqueueError::TooManyRequests
    );
    for item in 0..50 {
        push(&q, "b", item);
    }
    assert_eq!(q.tenant_queriers("a").unwrap().len(), 1);
    assert!(q.tenant_queriers("b").is_none());

    a_queriers.store(3, Ordering::SeqCst);
    assert_eq!(q.tenant_queriers("a").unwrap().len(), 3);
    let shard = q.tenant_queriers("a").unwrap();
    let outside = handles
        .iter()
        .find(|h| !shard.iter().any(|m| **m == *h.querier_id()))
        .unwrap();
    // The querier outside a's shard of 3 only ever gets b's items.
    for _ in 0..10 {
        assert_eq!(next(&q, outside).await.0, "b");
    }
}
