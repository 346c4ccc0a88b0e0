//! PostgreSQL's bulk path for the writes that dominate under load: a run of
//! consecutive creates (without a bootstrap token) and updates in a batch
//! is read with two statements, decided in memory in queue order, and
//! written with at most four multi-row statements (rows inserted, rows
//! updated, their events, the inventory), instead of four or five round
//! trips per operation. Every refusal (name taken, pending limit, unique
//! uid, missing object, an update function's refusal or panic) is decided
//! before anything is written, so no operation needs a savepoint of its
//! own; a failed write fails the batch, and every operation of it is
//! answered with an error.
//!
//! Runs inside the writer's transaction, after the batch has locked the
//! resource-version counter row: every other replica's writer waits on that
//! lock, so what the two reads see stays true until the commit.
//!
//! This module must never answer an operation (answers are settled by the
//! writer after the commit), never write outside the batch's transaction,
//! and never decide policy (guards and update functions come from callers).

use std::collections::{HashMap, HashSet};

use certsign_proto::v1::CertificateSigningRequest;
use prost::Message as _;
use sqlx::Row as _;
use sqlx::postgres::PgConnection;

use crate::decision::{State, condition_column, state_of};
use crate::expiry::expiry_column;
use crate::issued::IssuedRecord;
use crate::store::batch::{Answer, Op, apply_update, outcome, update_outcome};
use crate::store::schema::object_of_row;
use crate::store::types::{StoreError, decode_stored, name_of, set_rv};
use certsign_runtime::unix_now;

/// Whether `op` can run on the bulk path (a create that counts a bootstrap
/// token's use runs alone: the count is a conditional write).
pub(super) fn bulkable(op: &Op) -> bool {
    match op {
        Op::Create { guard, .. } => guard.token.is_none(),
        Op::Update { .. } => true,
        _ => false,
    }
}

/// What the run knows of one name: its current object (`None`: absent or
/// unreadable, with why in `corrupt`), and what the run did to it.
struct Slot {
    obj: Option<CertificateSigningRequest>,
    corrupt: Option<String>,
    /// Created in this run: inserted at the end with its final columns.
    created: Option<Created>,
    /// Changed by this run (an existing row: updated at the end).
    dirty: bool,
    /// Its state changed in this run (due for forwarding now if approved).
    moved: bool,
    /// The resource version of its last write in this run.
    rv: i64,
}

struct Created {
    uid: String,
    signer_name: String,
    username: String,
    created: i64,
    renewal: Vec<u8>,
}

/// One `csr_events` row.
struct EventRow {
    rv: i64,
    kind: &'static str,
    name: String,
    object: Vec<u8>,
}

/// Runs `ops` (all [`bulkable`], in queue order) with resource versions
/// from `*rv + 1`, pushing one answer per operation except those returned:
/// creates whose uid is already taken, which the caller runs alone so the
/// database itself refuses them. On an error every operation not returned
/// has an answer (the batch fails, so each gets an error).
pub(super) async fn run(
    conn: &mut PgConnection,
    rv: &mut i64,
    ops: Vec<Op>,
    answers: &mut Vec<Answer>,
) -> Result<Vec<Op>, StoreError> {
    let keys = Keys::of(&ops);
    let (mut slots, uids, mut pending) = match read(conn, keys).await {
        Ok(r) => r,
        Err(e) => {
            answers.extend(ops.into_iter().map(Op::unrun));
            return Err(e);
        }
    };
    let mut taken_uids = uids;
    let mut alone = Vec::new();
    let mut events = Vec::new();
    let mut issued = Vec::new();
    for op in ops {
        let next = *rv + 1;
        match op {
            Op::Create {
                obj,
                renewal,
                guard,
                reply,
            } => {
                let mut obj = *obj;
                let uid = obj.metadata.as_ref().map(|m| m.uid.clone());
                let uid = uid.unwrap_or_default();
                if taken_uids.contains(&uid) {
                    alone.push(Op::Create {
                        obj: Box::new(obj),
                        renewal,
                        guard,
                        reply,
                    });
                    continue;
                }
                let name = name_of(&obj).to_string();
                let spec = obj.spec.clone().unwrap_or_default();
                let state = state_of(&obj);
                let slot = slots.entry(name.clone()).or_insert_with(Slot::absent);
                let taken = i64::from(slot.obj.is_some() || slot.corrupt.is_some());
                let count = pending.get(&spec.username).copied().unwrap_or(0);
                let r = guard
                    .admit(&name, state, &spec.username, taken, count)
                    .map(|()| {
                        set_rv(&mut obj, next);
                        obj
                    });
                if let Ok(obj) = &r {
                    if state == State::Pending {
                        *pending.entry(spec.username.clone()).or_insert(0) += 1;
                    }
                    taken_uids.insert(uid.clone());
                    events.push(EventRow {
                        rv: next,
                        kind: "ADDED",
                        name: name.clone(),
                        object: obj.encode_to_vec(),
                    });
                    let created = obj.metadata.as_ref().and_then(|m| m.creation_timestamp);
                    slot.obj = Some(obj.clone());
                    slot.rv = next;
                    slot.created = Some(Created {
                        uid,
                        signer_name: spec.signer_name,
                        username: spec.username,
                        created: created.map_or_else(unix_now, |t| t.seconds),
                        renewal,
                    });
                }
                answers.push(outcome(reply, r, |_| true, rv, next).0);
            }
            Op::Update { name, mut f } => {
                let slot = slots.entry(name.clone()).or_insert_with(Slot::absent);
                let r = match (&slot.obj, &slot.corrupt) {
                    (Some(current), _) => {
                        let mut obj = current.clone();
                        apply_update(&name, &mut obj, f.as_mut(), next).map(|moved| (obj, moved))
                    }
                    (None, Some(message)) => Err(StoreError::Corrupt {
                        name: name.clone(),
                        message: message.clone(),
                    }),
                    (None, None) => Err(StoreError::NotFound(name.clone())),
                };
                let r = match r {
                    Ok((obj, Some(moved))) => {
                        let before = slot.obj.as_ref().map(state_of);
                        let after = state_of(&obj);
                        let username = obj.spec.as_ref().map(|s| s.username.as_str());
                        if let Some(count) = username.and_then(|u| pending.get_mut(u)) {
                            *count += i64::from(after == State::Pending)
                                - i64::from(before == Some(State::Pending));
                        }
                        if moved
                            && after == State::Issued
                            && let Some(record) = IssuedRecord::of(&obj)
                        {
                            issued.push(record);
                        }
                        events.push(EventRow {
                            rv: next,
                            kind: "MODIFIED",
                            name: name.clone(),
                            object: obj.encode_to_vec(),
                        });
                        slot.obj = Some(obj.clone());
                        slot.dirty = true;
                        slot.moved |= moved;
                        slot.rv = next;
                        Ok((obj, true))
                    }
                    // Unchanged or refused: the stored object stands.
                    Ok((_, None)) => Ok((slot.obj.clone().unwrap_or_default(), false)),
                    Err(e) => Err(e),
                };
                answers.push(update_outcome(f, r, rv, next).0);
            }
            other => answers.push(other.unrun()),
        }
    }
    if let Err(e) = write(conn, &slots, &events, &issued).await {
        answers.extend(alone.into_iter().map(Op::unrun));
        return Err(e);
    }
    Ok(alone)
}

impl Slot {
    fn absent() -> Self {
        Slot {
            obj: None,
            corrupt: None,
            created: None,
            dirty: false,
            moved: false,
            rv: 0,
        }
    }
}

type ReadState = (HashMap<String, Slot>, HashSet<String>, HashMap<String, i64>);

/// What the run's reads look up: every name it touches, every uid it
/// creates, every creator.
struct Keys {
    names: Vec<String>,
    uids: Vec<String>,
    users: Vec<String>,
}

impl Keys {
    fn of(ops: &[Op]) -> Self {
        let (mut names, mut uids, mut users) = (Vec::new(), Vec::new(), Vec::new());
        for op in ops {
            match op {
                Op::Create { obj, .. } => {
                    names.push(name_of(obj).to_string());
                    let meta = obj.metadata.as_ref();
                    uids.push(meta.map(|m| m.uid.clone()).unwrap_or_default());
                    let spec = obj.spec.as_ref();
                    users.push(spec.map(|s| s.username.clone()).unwrap_or_default());
                }
                Op::Update { name, .. } => names.push(name.clone()),
                _ => {}
            }
        }
        names.sort_unstable();
        names.dedup();
        users.sort_unstable();
        users.dedup();
        Keys { names, uids, users }
    }
}

/// The run's two reads: the rows of every name it touches (and of every
/// uid it creates), and the pending counts of its creators.
async fn read(conn: &mut PgConnection, keys: Keys) -> Result<ReadState, StoreError> {
    let Keys { names, uids, users } = keys;
    let rows = sqlx::query(concat!(
        "SELECT name, uid, ",
        object_of_row!(),
        " AS object FROM csrs WHERE name = ANY($1) OR uid = ANY($2)"
    ))
    .bind(&names)
    .bind(&uids)
    .fetch_all(&mut *conn)
    .await?;
    let mut slots = HashMap::with_capacity(names.len());
    let mut taken_uids = HashSet::new();
    for row in &rows {
        let name: String = row.try_get("name")?;
        taken_uids.insert(row.try_get::<String, _>("uid")?);
        let mut slot = Slot::absent();
        match decode_stored(&name, row.try_get("object")?) {
            Ok(obj) => slot.obj = Some(obj),
            Err(e) => slot.corrupt = Some(e.to_string()),
        }
        slots.insert(name, slot);
    }
    let mut pending = HashMap::with_capacity(users.len());
    if !users.is_empty() {
        let rows = sqlx::query(
            "SELECT username, COUNT(*) AS n FROM csrs \
             WHERE username = ANY($1) AND state = 'pending' GROUP BY username",
        )
        .bind(&users)
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            pending.insert(row.try_get("username")?, row.try_get("n")?);
        }
        for u in users {
            pending.entry(u).or_insert(0);
        }
    }
    Ok((slots, taken_uids, pending))
}

/// The run's writes, each one multi-row statement (skipped when empty).
async fn write(
    conn: &mut PgConnection,
    slots: &HashMap<String, Slot>,
    events: &[EventRow],
    issued: &[IssuedRecord],
) -> Result<(), StoreError> {
    let mut ins = Rows::default();
    let mut upd = Rows::default();
    let mut moved = Vec::new();
    let mut created_rows = Vec::new();
    // Rows in the order the run first wrote them (creates: in uid order).
    let mut seen = HashSet::new();
    for name in events.iter().map(|e| &e.name) {
        let Some(slot) = slots.get(name).filter(|_| seen.insert(name)) else {
            continue;
        };
        let Some(obj) = &slot.obj else { continue };
        if let Some(c) = &slot.created {
            ins.push(name, obj, slot.rv);
            created_rows.push(c);
        } else if slot.dirty {
            upd.push(name, obj, slot.rv);
            moved.push(slot.moved);
        }
    }
    if !ins.names.is_empty() {
        let col = |f: fn(&Created) -> &String| -> Vec<&String> {
            created_rows.iter().map(|c| f(c)).collect()
        };
        let created: Vec<i64> = created_rows.iter().map(|c| c.created).collect();
        let renewals: Vec<&[u8]> = created_rows.iter().map(|c| c.renewal.as_slice()).collect();
        sqlx::query(
            "INSERT INTO csrs (name, uid, signer_name, username, state, cond, created, \
             resource_version, next_attempt, attempts, renewal, expires) \
             SELECT n, u, s, us, st, c, cr, rv, 0, 0, r, e FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::int8[], $9::bytea[], \
             $10::int8[]) AS t(n, u, s, us, st, c, cr, rv, r, e)",
        )
        .bind(&ins.names)
        .bind(col(|c| &c.uid))
        .bind(col(|c| &c.signer_name))
        .bind(col(|c| &c.username))
        .bind(&ins.states)
        .bind(&ins.conds)
        .bind(created)
        .bind(&ins.rvs)
        .bind(renewals)
        .bind(&ins.expires)
        .execute(&mut *conn)
        .await?;
    }
    if !upd.names.is_empty() {
        sqlx::query(
            "UPDATE csrs SET state = t.st, cond = t.c, resource_version = t.rv, \
             next_attempt = CASE WHEN t.moved THEN 0 ELSE csrs.next_attempt END, expires = t.e \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[], $6::int8[]) \
             AS t(n, st, c, rv, moved, e) WHERE csrs.name = t.n",
        )
        .bind(&upd.names)
        .bind(&upd.states)
        .bind(&upd.conds)
        .bind(&upd.rvs)
        .bind(moved)
        .bind(&upd.expires)
        .execute(&mut *conn)
        .await?;
    }
    if !events.is_empty() {
        let now = unix_now();
        sqlx::query(
            "INSERT INTO csr_events (resource_version, event_type, name, created, object) \
             SELECT rv, k, n, $4, o FROM UNNEST($1::int8[], $2::text[], $3::text[], $5::bytea[]) \
             AS t(rv, k, n, o)",
        )
        .bind(events.iter().map(|e| e.rv).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>())
        .bind(now)
        .bind(
            events
                .iter()
                .map(|e| e.object.as_slice())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    if !issued.is_empty() {
        let text =
            |f: fn(&IssuedRecord) -> &String| -> Vec<&String> { issued.iter().map(f).collect() };
        sqlx::query(
            "INSERT INTO certificates (serial, subject, signer_name, requestor, request_name, \
             request_uid, not_before, not_after, certificate) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::int8[], $8::int8[], $9::bytea[]) ON CONFLICT (serial) DO NOTHING",
        )
        .bind(text(|r| &r.serial))
        .bind(text(|r| &r.subject))
        .bind(text(|r| &r.signer_name))
        .bind(text(|r| &r.requestor))
        .bind(text(|r| &r.request_name))
        .bind(text(|r| &r.request_uid))
        .bind(issued.iter().map(|r| r.not_before).collect::<Vec<_>>())
        .bind(issued.iter().map(|r| r.not_after).collect::<Vec<_>>())
        .bind(
            issued
                .iter()
                .map(|r| r.certificate_pem.as_slice())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The columns every row write sets, one array per column.
#[derive(Default)]
struct Rows {
    names: Vec<String>,
    states: Vec<&'static str>,
    conds: Vec<String>,
    rvs: Vec<i64>,
    expires: Vec<i64>,
}

impl Rows {
    fn push(&mut self, name: &str, obj: &CertificateSigningRequest, rv: i64) {
        self.names.push(name.to_string());
        self.states.push(state_of(obj).as_str());
        self.conds.push(condition_column(obj));
        self.rvs.push(rv);
        self.expires.push(expiry_column(obj));
    }
}
