/* tests/model/lock_free_queue.pml: a Promela model of crew::LockFreeQueue's
 * protocol (include/crew/lock_free_queue.hpp, Vyukov's bounded MPMC ring),
 * checked exhaustively by spin (tests/model/run_spin.cmake runs it).
 *
 * Modelled, step for step as the C++ does them: try_emplace (load tail; load
 * the slot's seq; compare with the ticket; compare_exchange_weak on tail,
 * spurious failure included; write the item; store seq = ticket + 1) and
 * try_consume (load head; load seq; compare with ticket + 1; CAS on head;
 * move the item out and destroy it; store seq = ticket + capacity), with
 * every access to a shared variable its own atomic step. The item is written
 * and read in two halves, so a consumer that reads a slot not fully written
 * (or a producer that overwrites one not yet vacated) is seen.
 *
 * Memory model: spin explores sequentially consistent interleavings only.
 * The C++ uses acquire/release on seq and relaxed on the tickets; whether
 * those weaker orders suffice (the release store of seq publishes the item,
 * the acquire load of seq sees it) is not checked here: this model treats
 * every access as seq_cst. (TSan over the stress tests checks those orders
 * on the interleavings it happens to see.)
 *
 * Sizes: capacity 2 (the smallest the queue allows; every slot is reused, so
 * the lap arithmetic seq = ticket + capacity is exercised), 2 producers
 * pushing 2 distinct items each, 2 consumers.
 *
 * Two harnesses (spin -D...; run_spin.cmake checks both):
 *   default            the consumers call the blocking pop() until it returns
 *                      false; a closer calls close() once every producer has
 *                      returned (as the executors do). pop() is block_until's
 *                      loop, "if try_pop: true; if closed: false; sleep",
 *                      followed by the fix "|| try_pop(out)".
 *   TRY_POP_CONSUMERS  no close(): the consumers call try_pop until all four
 *                      items are taken (a ghost count tells them).
 * A retry (a producer's try_push on a full queue, or a sleeping pop) is
 * modelled as waiting until something it read changes (tail/head, the seq it
 * loaded, closed): spinning on unchanged values only repeats the same failure,
 * and a real futex sleep is woken by the notify that follows each of those
 * changes (the EventCount's own prepare/cancel/wait protocol is not modelled).
 * So a livelock of the real loops shows up here as a deadlock.
 *
 * Checked (assertions, and pan's invalid end state = deadlock):
 *   - a producer writes only into a vacated slot, and no two threads touch a
 *     slot's item at once;
 *   - a consumer reads only a fully written item (both halves, nonzero);
 *   - every item is popped exactly once, and all four are popped;
 *   - per-producer FIFO as seen by each consumer: items of one producer taken
 *     by the same consumer come in the order pushed. (That is all Vyukov's
 *     queue promises: tickets are claimed in order, but two consumers holding
 *     consecutive tickets may finish in either order, and there is no order
 *     across producers.)
 *   - pop() returns false only when every pushed item's ticket has been taken
 *     (head == 4: the queue is empty), and once both consumers have returned
 *     false every item has been popped;
 *   - no deadlock: every run ends with all processes at their end.
 *
 * Teeth (mutations tried by hand, then reverted; spin 6.5.2, pan built with
 * -DSAFETY -DCOLLAPSE):
 *   - pop() without the final "|| try_pop(out)" (the bug fixed in pop();
 *     here: "skip" in place of the second try_pop): pan reports
 *     "assertion violated (head==(2*2))", errors: 1, after 2,674 states
 *     (depth 157). The trail: a consumer's try_pop finds the queue empty,
 *     producer 0 pushes its last item and both producers return, the closer
 *     calls close(), the consumer sees closed and returns false with that
 *     item still queued (head 3, tail 4).
 *   - push storing seq = ticket + 1 before writing the item: pan reports
 *     "assertion violated ((item_b[slot]==x)&&(x!=0))", errors: 1, within
 *     30 states, in both harnesses: a consumer claims the published slot and
 *     reads it before the producer has written the item.
 * Unmutated: errors: 0, about 3.4 million states stored (default harness)
 * and 2.9 million (TRY_POP_CONSUMERS), a few seconds each.
 */

#define CAP 2            /* capacity (a power of two, 2 at least) */
#define NP 2             /* producers */
#define PER 2            /* items per producer */
#define NC 2             /* consumers */
#define N (NP * PER)     /* items in all */

byte seq[CAP];           /* Slot::seq */
byte item_a[CAP];        /* Slot::storage, first half: 0 = no item */
byte item_b[CAP];        /* Slot::storage, second half */
byte tail = 0;           /* tail_ */
byte head = 0;           /* head_ */
bit closed = 0;          /* closed_ */

/* Ghost state, for the checks only. */
bit busy[CAP];           /* someone is writing or reading the slot's item */
byte popped[N + 1];      /* times item v was popped */
byte taken = 0;          /* items popped so far */
byte pdone = 0;          /* producers returned */
byte cdone = 0;          /* consumers returned */

/* try_emplace(v): ok = 1 when pushed. Leaves ticket and s as last compared
 * (for the retry's wait). */
inline try_push(v, ok) {
    ticket = tail;                                  /* tail_.load */
    do
    :: s = seq[ticket % CAP];                       /* slot.seq.load */
       if
       :: s == ticket ->                            /* lag == 0 */
          atomic {                                  /* tail_.compare_exchange_weak */
              if
              :: tail == ticket -> tail = ticket + 1; cas = 1
              :: tail != ticket -> ticket = tail; cas = 0
              :: true -> cas = 0                    /* spurious failure */
              fi
          }
          if
          :: cas ->
             slot = ticket % CAP;
             atomic {                               /* construct the item: first half */
                 assert(busy[slot] == 0);
                 assert(item_a[slot] == 0 && item_b[slot] == 0);
                 busy[slot] = 1;
                 item_a[slot] = v
             }
             atomic { item_b[slot] = v; busy[slot] = 0 }  /* second half */
             seq[slot] = ticket + 1;                /* slot.seq.store(ticket + 1) */
             ok = 1;
             break
          :: else -> skip                           /* CAS failed: ticket reloaded */
          fi
       :: s < ticket -> ok = 0; break               /* lag < 0: full */
       :: s > ticket -> ticket = tail               /* lag > 0: tail_.load */
       fi
    od
}

/* try_consume: ok = 1 and x = the item when popped. Leaves ticket and s as
 * last compared. */
inline try_pop(x, ok) {
    ticket = head;                                  /* head_.load */
    do
    :: s = seq[ticket % CAP];                       /* slot.seq.load */
       if
       :: s == ticket + 1 ->                        /* lag == 0 */
          atomic {                                  /* head_.compare_exchange_weak */
              if
              :: head == ticket -> head = ticket + 1; cas = 1
              :: head != ticket -> ticket = head; cas = 0
              :: true -> cas = 0                    /* spurious failure */
              fi
          }
          if
          :: cas ->
             slot = ticket % CAP;
             atomic {                               /* move out, destroy: first half */
                 assert(busy[slot] == 0);
                 busy[slot] = 1;
                 x = item_a[slot];
                 item_a[slot] = 0
             }
             atomic {                               /* second half */
                 assert(item_b[slot] == x && x != 0);  /* fully written */
                 item_b[slot] = 0;
                 busy[slot] = 0
             }
             seq[slot] = ticket + CAP;              /* slot.seq.store(ticket + capacity) */
             ok = 1;
             break
          :: else -> skip
          fi
       :: s < ticket + 1 -> ok = 0; break           /* lag < 0: empty */
       :: s > ticket + 1 -> ticket = head           /* lag > 0: head_.load */
       fi
    od
}

/* What a consumer does with a popped item: exactly once, per-producer FIFO. */
inline record(x) {
    d_step {
        assert(x >= 1 && x <= N);
        assert(popped[x] == 0);
        popped[x] = 1;
        taken++;
        assert(last[(x - 1) / PER] < (x - 1) % PER + 1);
        last[(x - 1) / PER] = (x - 1) % PER + 1;
        x = 0
    }
}

proctype producer(byte p) {
    byte k = 0, ticket, s, slot;
    bit ok, cas;
    do
    :: k < PER ->
       try_push(p * PER + k + 1, ok);
       if
       :: ok -> k++
       :: else -> (tail != ticket || seq[ticket % CAP] != s)  /* retry when changed */
       fi
    :: else -> break
    od;
    atomic { pdone++; ticket = 0; s = 0; slot = 0; ok = 0; cas = 0 }
}

#ifdef TRY_POP_CONSUMERS

proctype consumer() {
    byte ticket, s, slot, x;
    bit ok, cas;
    byte last[NP];       /* the last item number seen from each producer */
    do
    :: taken == N -> break
    :: else ->
       try_pop(x, ok);
       if
       :: ok -> record(x)
       :: else -> (taken == N || head != ticket || seq[ticket % CAP] != s)
       fi
    od;
    atomic {
        cdone++;
        if
        :: cdone == NC ->
           assert(popped[1] == 1 && popped[2] == 1 && popped[3] == 1 && popped[4] == 1)
        :: else -> skip
        fi
    }
}

init {
    atomic {
        seq[0] = 0; seq[1] = 1;
        run producer(0); run producer(1);
        run consumer(); run consumer()
    }
}

#else

/* pop(x) = block_until(not_empty_, try_pop) || try_pop. */
inline pop(x, ok) {
    do
    :: try_pop(x, ok);
       if
       :: ok -> break                               /* attempt() succeeded */
       :: else ->
          if
          :: closed ->                              /* closed(): block_until gives up */
             try_pop(x, ok);                        /* the fix: || try_pop(out) */
             break
          :: else ->                                /* sleep until notified */
             (closed || head != ticket || seq[ticket % CAP] != s)
          fi
       fi
    od
}

proctype consumer() {
    byte ticket, s, slot, x;
    bit ok, cas;
    byte last[NP];
    do
    :: pop(x, ok);
       if
       :: ok -> record(x)
       :: else -> break
       fi
    od;
    /* pop() returned false: closed, and every item's ticket was taken. */
    assert(head == N);
    d_step {
        cdone++;
        if
        :: cdone == NC ->
           assert(popped[1] == 1 && popped[2] == 1 && popped[3] == 1 && popped[4] == 1)
        :: else -> skip
        fi
    }
}

/* close() once every producer has returned. */
proctype closer() {
    (pdone == NP);
    closed = 1
}

init {
    atomic {
        seq[0] = 0; seq[1] = 1;
        run producer(0); run producer(1);
        run consumer(); run consumer();
        run closer()
    }
}

#endif
