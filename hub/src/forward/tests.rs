//! The forwarding rules in virtual time: no broker, no clock, no store.

use super::*;

const DAY: u64 = 86_400_000;

fn config() -> ForwardConfig {
    ForwardConfig {
        window: 3,
        resend_after_ms: 1_000,
    }
}

fn published(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

fn finished(effects: &[Effect]) -> Vec<(&str, HubState)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Finish { id, state, .. } => Some((id.as_str(), *state)),
            _ => None,
        })
        .collect()
}

/// A connected forwarder with `n` requests `r0..` for `d1`, offline.
fn queued(n: usize) -> Forwarder {
    let mut f = Forwarder::new(config());
    assert!(f.connected(0).is_empty());
    for i in 0..n {
        assert!(f
            .submit("d1", Pending::new(format!("r{i}"), DAY), 0)
            .is_empty());
    }
    f
}

#[test]
fn an_offline_device_gets_nothing_until_it_comes_online_then_a_window_in_order() {
    let mut f = queued(5);
    assert_eq!(f.pending("d1"), 5);
    let out = f.presence("d1", true, (7, 1), 10);
    assert_eq!(published(&out), ["r0", "r1", "r2"]);
    // Only a final status frees a slot; `accepted` does not.
    assert!(f.status("d1", "r0", false, 11).is_empty());
    assert_eq!(published(&f.status("d1", "r0", true, 12)), ["r3"]);
    assert_eq!(published(&f.status("d1", "r2", true, 13)), ["r4"]);
    assert_eq!(f.out("d1"), 3);
}

#[test]
fn a_new_device_session_or_hub_connection_resends_everything_unconfirmed_in_order() {
    let mut f = queued(4);
    f.presence("d1", true, (7, 1), 0);
    f.status("d1", "r0", true, 1);
    // The device drops off and comes back on a new connection: the broker
    // may have lost what it held, so the window goes out again, in order.
    assert!(f.presence("d1", false, (7, 1), 2).is_empty());
    assert_eq!(
        published(&f.presence("d1", true, (7, 2), 3)),
        ["r1", "r2", "r3"]
    );
    // The same presence again (a retained message seen twice) changes nothing.
    assert!(f.presence("d1", true, (7, 2), 4).is_empty());
    // The hub's own connection came back.
    f.disconnected();
    assert!(f.submit("d1", Pending::new("r4", DAY), 5).is_empty());
    assert_eq!(published(&f.connected(6)), ["r1", "r2", "r3"]);
}

#[test]
fn silence_about_a_request_resends_it_counted_from_the_last_word_heard() {
    let mut f = queued(2);
    f.presence("d1", true, (1, 1), 0);
    f.status("d1", "r0", false, 10); // accepted: silence counts from here
    assert_eq!(f.next_wakeup(), Some(1_000));
    assert!(f.tick(999).is_empty());
    assert_eq!(published(&f.tick(1_000)), ["r1"]);
    assert_eq!(f.next_wakeup(), Some(1_010));
    // Its final status was lost on the way back: asked again, the device
    // answers from its outcome memory.
    assert_eq!(published(&f.tick(1_010)), ["r0"]);
    assert_eq!(f.next_wakeup(), Some(2_000));
}

#[test]
fn ttl_ends_a_request_the_device_never_acknowledged() {
    let mut f = Forwarder::new(config());
    f.connected(0);
    f.submit("d1", Pending::new("short", 500), 0);
    f.submit("d1", Pending::new("long", DAY), 0);
    assert_eq!(f.next_wakeup(), Some(500));
    assert_eq!(finished(&f.tick(500)), [("short", HubState::Expired)]);
    // Heard from: the device decides expiry.
    f.presence("d1", true, (1, 1), 600);
    f.status("d1", "long", false, 601);
    let out = f.tick(DAY + 1);
    assert!(finished(&out).is_empty(), "not expired by the hub");
    assert_eq!(published(&out), ["long"], "asked again after the silence");
    assert_eq!(f.pending("d1"), 1);
}

#[test]
fn an_rpc_times_out_at_its_deadline_even_while_the_device_is_offline() {
    let mut f = Forwarder::new(config());
    f.connected(0);
    let mut rpc = Pending::new("q", 2_000);
    rpc.deadline_at = Some(2_000);
    f.submit("d1", rpc, 0);
    assert_eq!(finished(&f.tick(2_000)), [("q", HubState::TimedOut)]);
    assert_eq!(f.pending("d1"), 0);
}

#[test]
fn only_a_request_never_sent_can_be_cancelled() {
    let mut f = queued(4);
    assert_eq!(
        f.cancel("d1", "r3").unwrap(),
        [Effect::Finish {
            device: "d1".into(),
            id: "r3".into(),
            state: HubState::Cancelled
        }]
    );
    f.presence("d1", true, (1, 1), 0);
    assert_eq!(
        f.cancel("d1", "r0"),
        Err(CancelError::AlreadySent { id: "r0".into() })
    );
    // Sent once, then the device went away: still not cancellable.
    f.presence("d1", false, (1, 1), 1);
    assert!(matches!(
        f.cancel("d1", "r1"),
        Err(CancelError::AlreadySent { .. })
    ));
    assert!(matches!(
        f.cancel("d1", "nope"),
        Err(CancelError::Unknown { .. })
    ));
    assert!(matches!(
        f.cancel("d2", "r0"),
        Err(CancelError::Unknown { .. })
    ));
}

#[test]
fn devices_do_not_wait_for_each_other_and_duplicates_are_one_request() {
    let mut f = Forwarder::new(config());
    f.connected(0);
    f.presence("a", true, (1, 1), 0);
    f.presence("b", true, (1, 1), 0);
    for i in 0..4 {
        f.submit("a", Pending::new(format!("a{i}"), DAY), 1);
    }
    assert_eq!(
        published(&f.submit("b", Pending::new("b0", DAY), 2)),
        ["b0"]
    );
    assert!(f.submit("b", Pending::new("b0", DAY), 3).is_empty());
    assert_eq!(f.pending("b"), 1);
    assert_eq!(f.out("a"), 3);
}

/// Thousands of requests for a device that comes and goes: each is
/// published only while it is online, never more than the window is out,
/// and every one ends final, in order.
#[test]
fn many_requests_through_flapping_presence_all_end_in_order() {
    let mut f = Forwarder::new(ForwardConfig {
        window: 64,
        resend_after_ms: 30_000,
    });
    f.connected(0);
    let n = 5_000;
    for i in 0..n {
        f.submit("d", Pending::new(format!("{i:05}"), DAY), 0);
    }
    let (mut done, mut session, mut now) = (Vec::new(), 0u32, 0u64);
    let mut out: VecDeque<String> = VecDeque::new();
    while done.len() < n {
        session += 1;
        now += 1;
        out.clear();
        out.extend(
            published(&f.presence("d", true, (9, session), now))
                .into_iter()
                .map(String::from),
        );
        // The device finishes 100 in order, then drops off.
        for _ in 0..100 {
            let Some(id) = out.pop_front() else { break };
            if done.last().is_some_and(|last: &String| *last >= id) {
                continue; // a resend of one already done
            }
            assert!(f.out("d") <= 64);
            done.push(id.clone());
            now += 1;
            out.extend(
                published(&f.status("d", &id, true, now))
                    .into_iter()
                    .map(String::from),
            );
        }
        f.presence("d", false, (9, session), now);
    }
    let expected: Vec<String> = (0..n).map(|i| format!("{i:05}")).collect();
    assert_eq!(done, expected);
    assert_eq!(f.pending("d"), 0);
}

fn claims(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Claim { device } => Some(device.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_clustered_forwarder_sends_only_for_devices_it_owns() {
    let mut f = Forwarder::clustered(config());
    assert!(f.connected(0).is_empty());
    assert!(f.presence("d1", true, (1, 1), 0).is_empty());
    // Not owned: nothing kept, nothing sent, a claim instead.
    let out = f.submit("d1", Pending::new("r0", DAY), 1);
    assert_eq!(claims(&out), ["d1"]);
    assert!(published(&out).is_empty());
    assert_eq!(f.pending("d1"), 0);
    // Owned: the cluster task hands over the open requests in order.
    f.own("d1");
    let mut sent = Vec::new();
    for i in 0..4 {
        let out = f.submit("d1", Pending::new(format!("r{i}"), DAY), 2);
        assert!(claims(&out).is_empty());
        sent.extend(published(&out).into_iter().map(str::to_owned));
    }
    assert_eq!(sent, ["r0", "r1", "r2"], "the window holds");
    // A final status recorded by another instance frees a slot like one
    // received here.
    assert_eq!(published(&f.status("d1", "r0", true, 3)), ["r3"]);
    // The lease is lost: the requests are forgotten, presence is not.
    let dropped = f.disown("d1");
    assert_eq!(dropped, ["r1", "r2", "r3"]);
    assert_eq!(f.pending("d1"), 0);
    assert!(f.is_online("d1"));
    assert_eq!(claims(&f.submit("d1", Pending::new("r4", DAY), 4)), ["d1"]);
}

#[test]
fn a_device_taken_over_gets_its_unconfirmed_requests_again_in_order() {
    // Instance B takes the lease of a dead instance A: the requests A sent
    // (`ever_sent`) and those it never sent all go out, oldest first.
    let mut f = Forwarder::clustered(config());
    assert!(f.connected(0).is_empty());
    assert!(f.presence("d1", true, (1, 1), 0).is_empty());
    f.own("d1");
    let mut out = Vec::new();
    for i in 0..3 {
        let mut p = Pending::new(format!("r{i}"), DAY);
        p.ever_sent = i < 2;
        out.extend(f.submit("d1", p, 5));
    }
    assert_eq!(published(&out), ["r0", "r1", "r2"]);
    assert_eq!(
        f.cancel("d1", "r0"),
        Err(CancelError::AlreadySent { id: "r0".into() })
    );
    assert!(f.cancel("d1", "r2").is_err(), "sent now: too late");
}

#[test]
fn an_unclustered_forwarder_owns_every_device() {
    let mut f = Forwarder::new(config());
    assert!(f.connected(0).is_empty());
    assert!(f.presence("d1", true, (1, 1), 0).is_empty());
    let out = f.submit("d1", Pending::new("r0", DAY), 1);
    assert_eq!(published(&out), ["r0"]);
    assert!(claims(&out).is_empty());
}
