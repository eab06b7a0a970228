//! The history: its budget as the allocator counts it, the order records leave
//! in, and late answers to records that left.

use super::*;

/// Adds a request with a body of `body` bytes.
fn add(store: &mut Store, body: usize) -> u64 {
    let seq = store.add(
        Record::new(0, [192, 0, 2, 1].into(), SystemTime::now(), None),
        b"POST / HTTP/1.1\r\n\r\n",
    );
    let piece = store.put(seq, &vec![b'x'; body]);
    store.update(seq, |r| {
        r.request_body = StoredBody {
            size: body as u64,
            piece,
            truncated: false,
        }
    });
    seq
}

#[test]
fn the_oldest_go_first_once_the_budget_is_spent() {
    let budget = 2 << 20;
    let mut store = Store::new(budget);
    let seqs: Vec<u64> = (0..400).map(|_| add(&mut store, 10_000)).collect();
    assert!(store.used() <= budget, "{}", store.used());
    let kept: Vec<u64> = store.newest(1000).map(|e| e.seq).collect();
    assert_eq!(kept[0], seqs[399], "the newest is kept");
    // Blocks of 64 KiB hold six such records each: what is left of the block
    // being emptied and of the one being filled, and the list, take the rest.
    let bytes = kept.len() * 10_021;
    assert!(
        bytes <= budget && bytes >= budget * 8 / 10,
        "{}",
        kept.len()
    );
    assert!(store.get(seqs[0]).is_none());
    let newest = store.get(seqs[399]).expect("kept");
    assert_eq!(&newest.request.raw[..], b"POST / HTTP/1.1\r\n\r\n");
    assert_eq!(newest.request_body.captured, vec![b'x'; 10_000]);
    // A record grown past the budget evicts every older one, never itself.
    let piece = store.put(seqs[399], &vec![b'y'; budget]);
    store.update(seqs[399], |r| r.response_body.piece = piece);
    assert_eq!(store.newest(1000).count(), 1);
    let newest = store.get(seqs[399]).expect("kept");
    assert_eq!(newest.response_body.captured.len(), budget);
    assert_eq!(newest.request_body.captured, vec![b'x'; 10_000]);
    // And once it goes too, only the room for the list of records is left.
    add(&mut store, 0);
    add(&mut store, 0);
    assert!(store.get(seqs[399]).is_none());
    assert!(store.blocks.len() <= 1, "{}", store.blocks.len());
}

#[test]
fn bytes_put_for_a_record_no_longer_kept_are_not_copied() {
    let mut store = Store::new(1 << 20);
    let seq = add(&mut store, 10);
    store.clear();
    assert_eq!(store.put(seq, b"late").len, 0);
    assert_eq!(store.used(), 0);
    // Pieces made after a clear never name a block from before it.
    let seq = add(&mut store, 10);
    assert_eq!(
        &store.get(seq).expect("kept").request_body.captured[..],
        b"xxxxxxxxxx"
    );
}

#[test]
fn a_late_answer_to_the_oldest_request_goes_with_it() {
    let budget = 2 << 20;
    let mut store = Store::new(budget);
    let oldest = add(&mut store, 10);
    for _ in 0..100 {
        add(&mut store, 10_000);
    }
    // Its answer comes after a hundred newer requests, into a block of its own
    // behind theirs; the history is over budget and the oldest request goes.
    let piece = store.put(oldest, &vec![b'z'; 1_500_000]);
    store.update(oldest, |r| r.response_body.piece = piece);
    assert!(store.get(oldest).is_none());
    // Its block went with it, although the blocks before it are still in use:
    // the newer requests stay.
    assert!(store.used() <= budget, "{}", store.used());
    assert!(store.len() >= 90, "{} kept", store.len());
    for _ in 0..20 {
        add(&mut store, 10_000);
    }
    assert!(store.len() >= 110, "{} kept", store.len());
}

#[test]
fn a_budget_smaller_than_a_record_keeps_the_newest() {
    for budget in [0, 100, 1000, 2000] {
        let mut store = Store::new(budget);
        for _ in 0..20 {
            add(&mut store, 300);
        }
        let newest = store.newest(100).next().expect("the newest is kept");
        assert_eq!(&newest.request.raw[..], b"POST / HTTP/1.1\r\n\r\n");
        assert_eq!(newest.request_body.captured.len(), 300);
        assert!(store.len() <= 2, "{budget}: {} kept", store.len());
    }
}

#[test]
fn changes_reach_subscribers() {
    let mut store = Store::new(1 << 20);
    let mut feed = store.subscribe();
    let seq = store.add(
        Record::new(0, [192, 0, 2, 1].into(), SystemTime::now(), None),
        b"",
    );
    store.update(seq, |r| r.duration = Some(Duration::from_millis(3)));
    store.clear();
    assert_eq!(feed.try_recv().unwrap(), Change::Request(seq));
    assert_eq!(feed.try_recv().unwrap(), Change::Request(seq));
    assert_eq!(feed.try_recv().unwrap(), Change::Cleared);
    assert_eq!(store.used(), 0);
}
