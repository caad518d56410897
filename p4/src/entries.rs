//! [`Entries`]: the switch's table state as the program sees it — what a sequence of P4Runtime
//! updates installed — with the three operations on it: [`Entries::plan`] (a table generation
//! and local endpoints → the entries that express them), [`Entries::diff`] (the updates from
//! one state to another) and [`Entries::apply`] (one update, checked against the program,
//! applied; the decoder for entities a target sends back).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use nexus_dataplane::fib::{NextHop, RouteSet, RoutingKey};
use nexus_dataplane::forward::LocalEndpoints;

use crate::program::{
    self, ACTION_ALLOW_SOURCE, ACTION_DELIVER_LOCAL, ACTION_FORWARD, ACTION_SET_GROUP, GROUPS_MAX,
    MEMBERS_MAX, PROFILE_SELECTOR, TABLE_GROUP, TABLE_LOCAL, TABLE_ROUTE, TABLE_SOURCE, ValueError,
    WEIGHT_TOTAL_MAX, canonical, parse_value,
};
use crate::proto::v1::{
    Action, ActionProfileGroup, ActionProfileMember, Entity, FieldMatch, TableAction, TableEntry,
    Update, UpdateType, action, action_profile_group, entity, field_match, table_action,
};

/// What a selector member does: send to `addr`, writing `rewrite` into the frame if set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hop {
    /// The next hop's IPv4 UDP address.
    pub addr: SocketAddrV4,
    /// The routing key to write into the frame, if any.
    pub rewrite: Option<u128>,
}

/// A route-table entry's action: the group and its weight total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The selector group (and group-table key).
    pub group: u32,
    /// The sum of the group's member weights.
    pub weight_total: u32,
}

/// The program's table state. A planned state has one `nexus_group` entry per group, keyed by
/// the group's id and selecting that group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entries {
    /// `nexus_source`: allowed source addresses.
    pub sources: BTreeSet<Ipv4Addr>,
    /// `nexus_local`: routing key → local endpoint.
    pub local: BTreeMap<u128, SocketAddrV4>,
    /// `nexus_selector` members by id.
    pub members: BTreeMap<u32, Hop>,
    /// `nexus_selector` groups by id: (member id, weight) in cumulative-weight order.
    pub groups: BTreeMap<u32, Vec<(u32, u32)>>,
    /// `nexus_group`: group ids that have their entry (key = the group id, action = that
    /// selector group).
    pub group_entries: BTreeSet<u32>,
    /// `nexus_route`: routing key → group.
    pub routes: BTreeMap<u128, Route>,
}

/// Why a generation cannot be expressed on this target. Nothing was planned or sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The program parses IPv4 only; a next hop or local endpoint is IPv6.
    #[error("{what} {addr} is IPv6; the P4 target forwards over IPv4 only")]
    Ipv6 {
        /// Which kind of address.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// A group's weights sum above the selector's limit.
    #[error("route {key}: weights sum to {total}, above the P4 selector's {WEIGHT_TOTAL_MAX}")]
    WeightTotal {
        /// The route.
        key: RoutingKey,
        /// The sum.
        total: u64,
    },
    /// More distinct next hops or groups than the selector holds.
    #[error("{what}: {count} needed, the P4 target holds {max}")]
    TooMany {
        /// Members or groups.
        what: &'static str,
        /// How many the generation needs.
        count: usize,
        /// The program's limit.
        max: u64,
    },
    /// Member or group ids are exhausted (ids only grow while a controller runs).
    #[error("{0} ids exhausted")]
    IdsExhausted(&'static str),
}

/// Why an update was refused. The state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    /// The update has no entity, an unknown type, or an entity kind the program has no use for.
    #[error("malformed update: {0}")]
    Malformed(&'static str),
    /// An id (table, action, profile, field, parameter) the program does not have.
    #[error("unknown {what} id {id:#x}")]
    UnknownId {
        /// What kind of id.
        what: &'static str,
        /// The id.
        id: u32,
    },
    /// A match field or parameter value is refused.
    #[error("{what}: {error}")]
    Value {
        /// Which value.
        what: &'static str,
        /// Why.
        error: ValueError,
    },
    /// INSERT of something present, or MODIFY/DELETE of something absent.
    #[error("{what} {key}: {problem}")]
    State {
        /// What kind of entry.
        what: &'static str,
        /// Its key, printed.
        key: String,
        /// `already exists` or `not found`.
        problem: &'static str,
    },
    /// A reference to a member or group that is not installed, or a delete of one still
    /// referenced, or a zero weight.
    #[error("reference: {0}")]
    Reference(String),
    /// A table or profile is full.
    #[error("{0} is full")]
    Full(&'static str),
}

impl Entries {
    /// The entries expressing `routes` and `local`, reusing `self`'s member and group ids for
    /// the same next hops and groups (so an unchanged group is not rewritten) and giving new
    /// ones ids above every id in `self` (so a diff from `self` never reuses an id it deletes).
    ///
    /// IPv6 allowed sources are left out (the program parses IPv4 only, so no IPv6 datagram
    /// reaches the source check); IPv6 next hops and local endpoints are refused.
    pub fn plan(&self, routes: &RouteSet, local: &LocalEndpoints) -> Result<Entries, PlanError> {
        let mut next = Entries {
            sources: routes
                .sources()
                .iter()
                .filter_map(|s| match s.ip() {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect(),
            ..Entries::default()
        };
        for (key, addr) in local.iter() {
            next.local.insert(key.0, v4("local endpoint", addr)?);
        }
        let member_ids: BTreeMap<Hop, u32> = self.members.iter().map(|(id, h)| (*h, *id)).collect();
        let group_ids: BTreeMap<Vec<(Hop, u32)>, u32> = self
            .groups
            .iter()
            .map(|(id, members)| (self.group_key(members), *id))
            .collect();
        let mut member_next = self.members.keys().next_back().map_or(1, |id| id + 1);
        let mut group_next = self.groups.keys().next_back().map_or(1, |id| id + 1);
        let mut planned_members: BTreeMap<Hop, u32> = BTreeMap::new();
        let mut planned_groups: BTreeMap<Vec<(Hop, u32)>, u32> = BTreeMap::new();
        for (key, hops) in routes.routes() {
            let group_key = group_of(*key, hops)?;
            let total: u32 = group_key.iter().map(|(_, w)| *w).sum();
            let group = match planned_groups.get(&group_key) {
                Some(id) => *id,
                None => {
                    let mut members = Vec::with_capacity(group_key.len());
                    for (hop, weight) in &group_key {
                        let id = match planned_members.get(hop) {
                            Some(id) => *id,
                            None => {
                                let id = match member_ids.get(hop) {
                                    Some(id) => *id,
                                    None => take(&mut member_next, "member")?,
                                };
                                planned_members.insert(*hop, id);
                                next.members.insert(id, *hop);
                                id
                            }
                        };
                        members.push((id, *weight));
                    }
                    let id = match group_ids.get(&group_key) {
                        Some(id) => *id,
                        None => take(&mut group_next, "group")?,
                    };
                    planned_groups.insert(group_key, id);
                    next.groups.insert(id, members);
                    next.group_entries.insert(id);
                    id
                }
            };
            next.routes.insert(
                key.0,
                Route {
                    group,
                    weight_total: total,
                },
            );
        }
        if next.members.len() as u64 > MEMBERS_MAX {
            return Err(PlanError::TooMany {
                what: "next hops (selector members)",
                count: next.members.len(),
                max: MEMBERS_MAX,
            });
        }
        if next.groups.len() as u64 > GROUPS_MAX {
            return Err(PlanError::TooMany {
                what: "next-hop groups",
                count: next.groups.len(),
                max: GROUPS_MAX,
            });
        }
        Ok(next)
    }

    fn group_key(&self, members: &[(u32, u32)]) -> Vec<(Hop, u32)> {
        members
            .iter()
            .map(|(m, w)| {
                // Every group member is installed: `apply` and `plan` keep it so.
                let hop = self.members.get(m).expect("group member installed");
                (*hop, *w)
            })
            .collect()
    }

    /// The updates that turn `self` into `next`, in an order a target can apply one by one
    /// without a dangling reference: new members, groups and their group-table entries first;
    /// then deletes of the route, local and source entries `next` does not have (first, so a
    /// nearly full table has room for the inserts); then inserts and modifies of route, local
    /// and source entries; then deletes of group-table entries and groups, and of members last.
    pub fn diff(&self, next: &Entries) -> Vec<Update> {
        let mut out = Vec::new();
        for (id, hop) in &next.members {
            if !self.members.contains_key(id) {
                out.push(update(UpdateType::Insert, member_entity(*id, hop)));
            }
        }
        for (id, members) in &next.groups {
            match self.groups.get(id) {
                None => out.push(update(UpdateType::Insert, group_entity(*id, members))),
                Some(old) if old != members => {
                    out.push(update(UpdateType::Modify, group_entity(*id, members)));
                }
                Some(_) => {}
            }
        }
        for id in next.group_entries.difference(&self.group_entries) {
            out.push(update(UpdateType::Insert, group_table_entity(*id)));
        }
        for (key, route) in &self.routes {
            if !next.routes.contains_key(key) {
                out.push(update(UpdateType::Delete, route_entity(*key, *route)));
            }
        }
        for (key, addr) in &self.local {
            if !next.local.contains_key(key) {
                out.push(update(UpdateType::Delete, local_entity(*key, *addr)));
            }
        }
        for ip in self.sources.difference(&next.sources) {
            out.push(update(UpdateType::Delete, source_entity(*ip)));
        }
        for ip in next.sources.difference(&self.sources) {
            out.push(update(UpdateType::Insert, source_entity(*ip)));
        }
        for (key, addr) in &next.local {
            match self.local.get(key) {
                None => out.push(update(UpdateType::Insert, local_entity(*key, *addr))),
                Some(old) if old != addr => {
                    out.push(update(UpdateType::Modify, local_entity(*key, *addr)));
                }
                Some(_) => {}
            }
        }
        for (key, route) in &next.routes {
            match self.routes.get(key) {
                None => out.push(update(UpdateType::Insert, route_entity(*key, *route))),
                Some(old) if old != route => {
                    out.push(update(UpdateType::Modify, route_entity(*key, *route)));
                }
                Some(_) => {}
            }
        }
        for id in self.group_entries.difference(&next.group_entries) {
            out.push(update(UpdateType::Delete, group_table_entity(*id)));
        }
        for (id, members) in &self.groups {
            if !next.groups.contains_key(id) {
                out.push(update(UpdateType::Delete, group_entity(*id, members)));
            }
        }
        for (id, hop) in &self.members {
            if !next.members.contains_key(id) {
                out.push(update(UpdateType::Delete, member_entity(*id, hop)));
            }
        }
        out
    }

    /// Every entity of this state, as INSERTs in [`diff`](Self::diff)'s order (what a Read
    /// returns, and what installs it on an empty target).
    pub fn to_updates(&self) -> Vec<Update> {
        Entries::default().diff(self)
    }

    /// Applies one update, checking it against the program: ids exist, match-field and
    /// parameter values canonical and within their bit widths, INSERT only of absent entries and
    /// MODIFY/DELETE only of present ones, weights above 0, member and group references
    /// installed, no delete of a member or group still referenced, table sizes. On error the
    /// state is unchanged.
    pub fn apply(&mut self, update: &Update) -> Result<(), EntityError> {
        let kind = UpdateType::try_from(update.r#type)
            .ok()
            .filter(|t| *t != UpdateType::Unspecified)
            .ok_or(EntityError::Malformed("update type"))?;
        let entity = update
            .entity
            .as_ref()
            .and_then(|e| e.entity.as_ref())
            .ok_or(EntityError::Malformed("no entity"))?;
        match entity {
            entity::Entity::ActionProfileMember(m) => self.apply_member(kind, m),
            entity::Entity::ActionProfileGroup(g) => self.apply_group(kind, g),
            entity::Entity::TableEntry(t) => self.apply_table_entry(kind, t),
        }
    }

    fn apply_member(
        &mut self,
        kind: UpdateType,
        m: &ActionProfileMember,
    ) -> Result<(), EntityError> {
        check_profile(m.action_profile_id)?;
        let present = self.members.contains_key(&m.member_id);
        let key = || format!("{}", m.member_id);
        if kind == UpdateType::Delete {
            if !present {
                return Err(missing("member", key()));
            }
            if let Some((g, _)) = self
                .groups
                .iter()
                .find(|(_, ms)| ms.iter().any(|(id, _)| *id == m.member_id))
            {
                return Err(EntityError::Reference(format!(
                    "member {} is in group {g}",
                    m.member_id
                )));
            }
            self.members.remove(&m.member_id);
            return Ok(());
        }
        let action = m
            .action
            .as_ref()
            .ok_or(EntityError::Malformed("member without action"))?;
        let hop = decode_forward(action)?;
        match (kind, present) {
            (UpdateType::Insert, true) => return Err(exists("member", key())),
            (UpdateType::Modify, false) => return Err(missing("member", key())),
            _ => {}
        }
        if kind == UpdateType::Insert && self.members.len() as u64 >= MEMBERS_MAX {
            return Err(EntityError::Full("nexus_selector members"));
        }
        self.members.insert(m.member_id, hop);
        Ok(())
    }

    fn apply_group(&mut self, kind: UpdateType, g: &ActionProfileGroup) -> Result<(), EntityError> {
        check_profile(g.action_profile_id)?;
        let present = self.groups.contains_key(&g.group_id);
        let key = || format!("{}", g.group_id);
        if kind == UpdateType::Delete {
            if !present {
                return Err(missing("group", key()));
            }
            if self.group_entries.contains(&g.group_id) {
                return Err(EntityError::Reference(format!(
                    "group {} is still referenced",
                    g.group_id
                )));
            }
            self.groups.remove(&g.group_id);
            return Ok(());
        }
        match (kind, present) {
            (UpdateType::Insert, true) => return Err(exists("group", key())),
            (UpdateType::Modify, false) => return Err(missing("group", key())),
            _ => {}
        }
        let mut members = Vec::with_capacity(g.members.len());
        let mut total = 0u64;
        for m in &g.members {
            if m.weight <= 0 {
                return Err(EntityError::Reference(format!(
                    "group {}: member {} has weight {}",
                    g.group_id, m.member_id, m.weight
                )));
            }
            if !self.members.contains_key(&m.member_id) {
                return Err(EntityError::Reference(format!(
                    "group {}: member {} is not installed",
                    g.group_id, m.member_id
                )));
            }
            if members.iter().any(|(id, _)| *id == m.member_id) {
                return Err(EntityError::Reference(format!(
                    "group {}: member {} listed twice",
                    g.group_id, m.member_id
                )));
            }
            total += m.weight as u64;
            members.push((m.member_id, m.weight as u32));
        }
        if members.is_empty() || total > u64::from(WEIGHT_TOTAL_MAX) {
            return Err(EntityError::Reference(format!(
                "group {}: weight total {total} is outside 1..={WEIGHT_TOTAL_MAX}",
                g.group_id
            )));
        }
        if kind == UpdateType::Insert && self.groups.len() as u64 >= GROUPS_MAX {
            return Err(EntityError::Full("nexus_selector groups"));
        }
        self.groups.insert(g.group_id, members);
        Ok(())
    }

    fn apply_table_entry(&mut self, kind: UpdateType, t: &TableEntry) -> Result<(), EntityError> {
        let table = program::table(t.table_id).ok_or(EntityError::UnknownId {
            what: "table",
            id: t.table_id,
        })?;
        if t.is_default_action {
            return Err(EntityError::Malformed("the default actions are constant"));
        }
        if t.priority != 0 {
            return Err(EntityError::Malformed("priority on an exact-match table"));
        }
        let [field] = table.fields else {
            unreachable!("every table of the program has one key field")
        };
        let [m] = t.r#match.as_slice() else {
            return Err(EntityError::Malformed("exactly one match field expected"));
        };
        if m.field_id != field.id {
            return Err(EntityError::UnknownId {
                what: "match field",
                id: m.field_id,
            });
        }
        let Some(field_match::FieldMatchType::Exact(exact)) = &m.field_match_type else {
            return Err(EntityError::Malformed("match field is not exact"));
        };
        let key =
            parse_value(&exact.value, field.bitwidth).map_err(|error| EntityError::Value {
                what: field.name,
                error,
            })?;
        let action = if kind == UpdateType::Delete {
            None
        } else {
            Some(
                t.action
                    .as_ref()
                    .and_then(|a| a.r#type.as_ref())
                    .ok_or(EntityError::Malformed("table entry without action"))?,
            )
        };
        match t.table_id {
            TABLE_SOURCE => {
                let ip = Ipv4Addr::from(key as u32);
                if let Some(a) = action {
                    decode_direct(a, ACTION_ALLOW_SOURCE)?;
                }
                let present = self.sources.contains(&ip);
                match (kind, present) {
                    (UpdateType::Insert, true) => Err(exists("source", ip.to_string())),
                    (UpdateType::Modify | UpdateType::Delete, false) => {
                        Err(missing("source", ip.to_string()))
                    }
                    (UpdateType::Delete, true) => {
                        self.sources.remove(&ip);
                        Ok(())
                    }
                    _ => {
                        if !present && self.sources.len() as u64 >= table.size {
                            return Err(EntityError::Full("nexus_source"));
                        }
                        self.sources.insert(ip);
                        Ok(())
                    }
                }
            }
            TABLE_LOCAL => {
                let value = match action {
                    Some(a) => {
                        let p = decode_direct(a, ACTION_DELIVER_LOCAL)?;
                        Some(SocketAddrV4::new(Ipv4Addr::from(p[0] as u32), p[1] as u16))
                    }
                    None => None,
                };
                apply_map(&mut self.local, kind, "local entry", key, value, table.size)
            }
            TABLE_ROUTE => {
                let value = match action {
                    Some(a) => {
                        let p = decode_direct(a, ACTION_SET_GROUP)?;
                        let route = Route {
                            group: p[0] as u32,
                            weight_total: p[1] as u32,
                        };
                        let (Some(members), true) = (
                            self.groups.get(&route.group),
                            self.group_entries.contains(&route.group),
                        ) else {
                            return Err(EntityError::Reference(format!(
                                "route {key:#x}: group {} or its nexus_group entry is not installed",
                                route.group
                            )));
                        };
                        let total: u32 = members.iter().map(|(_, w)| w).sum();
                        if total != route.weight_total {
                            return Err(EntityError::Reference(format!(
                                "route {key:#x}: weight_total {} but group {} sums to {total}",
                                route.weight_total, route.group
                            )));
                        }
                        Some(route)
                    }
                    None => None,
                };
                apply_map(&mut self.routes, kind, "route", key, value, table.size)
            }
            TABLE_GROUP => {
                let group = key as u32;
                if let Some(a) = action {
                    let table_action::Type::ActionProfileGroupId(id) = a else {
                        return Err(EntityError::Malformed(
                            "nexus_group entries take a selector group",
                        ));
                    };
                    if *id != group {
                        return Err(EntityError::Reference(format!(
                            "nexus_group entry {group} must select group {group}, not {id}"
                        )));
                    }
                }
                if kind != UpdateType::Delete && !self.groups.contains_key(&group) {
                    return Err(EntityError::Reference(format!(
                        "nexus_group entry for group {group}, which is not installed"
                    )));
                }
                if kind == UpdateType::Delete && self.routes.values().any(|r| r.group == group) {
                    return Err(EntityError::Reference(format!(
                        "nexus_group entry {group} is still used by a route"
                    )));
                }
                let present = self.group_entries.contains(&group);
                match (kind, present) {
                    (UpdateType::Insert, true) => Err(exists("group entry", group.to_string())),
                    (UpdateType::Modify | UpdateType::Delete, false) => {
                        Err(missing("group entry", group.to_string()))
                    }
                    (UpdateType::Delete, true) => {
                        self.group_entries.remove(&group);
                        Ok(())
                    }
                    _ => {
                        self.group_entries.insert(group);
                        Ok(())
                    }
                }
            }
            other => Err(EntityError::UnknownId {
                what: "table",
                id: other,
            }),
        }
    }
}

fn apply_map<V>(
    map: &mut BTreeMap<u128, V>,
    kind: UpdateType,
    what: &'static str,
    key: u128,
    value: Option<V>,
    size: u64,
) -> Result<(), EntityError> {
    let present = map.contains_key(&key);
    match (kind, present, value) {
        (UpdateType::Insert, true, _) => Err(exists(what, format!("{key:#x}"))),
        (UpdateType::Modify | UpdateType::Delete, false, _) => {
            Err(missing(what, format!("{key:#x}")))
        }
        (UpdateType::Delete, true, _) => {
            map.remove(&key);
            Ok(())
        }
        (_, _, Some(value)) => {
            if !present && map.len() as u64 >= size {
                return Err(EntityError::Full(what));
            }
            map.insert(key, value);
            Ok(())
        }
        (_, _, None) => Err(EntityError::Malformed("table entry without action")),
    }
}

fn exists(what: &'static str, key: String) -> EntityError {
    EntityError::State {
        what,
        key,
        problem: "already exists",
    }
}

fn missing(what: &'static str, key: String) -> EntityError {
    EntityError::State {
        what,
        key,
        problem: "not found",
    }
}

fn check_profile(id: u32) -> Result<(), EntityError> {
    if id == PROFILE_SELECTOR {
        Ok(())
    } else {
        Err(EntityError::UnknownId {
            what: "action profile",
            id,
        })
    }
}

/// A direct action's parameter values, checked against the program (`expected` action).
fn decode_direct(a: &table_action::Type, expected: u32) -> Result<Vec<u128>, EntityError> {
    let table_action::Type::Action(action) = a else {
        return Err(EntityError::Malformed("this table takes a direct action"));
    };
    if action.action_id != expected {
        return Err(EntityError::UnknownId {
            what: "action for this table",
            id: action.action_id,
        });
    }
    decode_params(action)
}

fn decode_params(a: &Action) -> Result<Vec<u128>, EntityError> {
    let info = program::action(a.action_id).ok_or(EntityError::UnknownId {
        what: "action",
        id: a.action_id,
    })?;
    if a.params.len() != info.params.len() {
        return Err(EntityError::Malformed("wrong number of action parameters"));
    }
    info.params
        .iter()
        .zip(&a.params)
        .map(|(p, given)| {
            if given.param_id != p.id {
                return Err(EntityError::UnknownId {
                    what: "action parameter",
                    id: given.param_id,
                });
            }
            parse_value(&given.value, p.bitwidth).map_err(|error| EntityError::Value {
                what: p.name,
                error,
            })
        })
        .collect()
}

fn decode_forward(a: &Action) -> Result<Hop, EntityError> {
    if a.action_id != ACTION_FORWARD {
        return Err(EntityError::UnknownId {
            what: "action for nexus_selector",
            id: a.action_id,
        });
    }
    let p = decode_params(a)?;
    let rewrite = match p[2] {
        0 if p[3] == 0 => None,
        0 => return Err(EntityError::Malformed("new_key set without rewrite")),
        _ => Some(p[3]),
    };
    Ok(Hop {
        addr: SocketAddrV4::new(Ipv4Addr::from(p[0] as u32), p[1] as u16),
        rewrite,
    })
}

fn v4(what: &'static str, addr: SocketAddr) -> Result<SocketAddrV4, PlanError> {
    match addr {
        SocketAddr::V4(v4) => Ok(v4),
        SocketAddr::V6(_) => Err(PlanError::Ipv6 { what, addr }),
    }
}

/// A route's group as (hop, weight) in the data plane's canonical order (sorted next hops),
/// which is the order its cumulative weights run in.
fn group_of(key: RoutingKey, hops: &[NextHop]) -> Result<Vec<(Hop, u32)>, PlanError> {
    let mut sorted = hops.to_vec();
    sorted.sort();
    let total: u64 = sorted.iter().map(|h| u64::from(h.weight)).sum();
    if total > u64::from(WEIGHT_TOTAL_MAX) {
        return Err(PlanError::WeightTotal { key, total });
    }
    sorted
        .iter()
        .map(|h| {
            Ok((
                Hop {
                    addr: v4("next hop", h.addr)?,
                    rewrite: h.rewrite.map(|k| k.0),
                },
                h.weight,
            ))
        })
        .collect()
}

fn take(next: &mut u32, what: &'static str) -> Result<u32, PlanError> {
    let id = *next;
    *next = next.checked_add(1).ok_or(PlanError::IdsExhausted(what))?;
    Ok(id)
}

fn update(kind: UpdateType, entity: entity::Entity) -> Update {
    Update {
        r#type: kind as i32,
        entity: Some(Entity {
            entity: Some(entity),
        }),
    }
}

fn param(id: u32, value: u128, bitwidth: u32) -> action::Param {
    action::Param {
        param_id: id,
        value: canonical(value, bitwidth),
    }
}

fn exact(value: u128, bitwidth: u32) -> Vec<FieldMatch> {
    vec![FieldMatch {
        field_id: 1,
        field_match_type: Some(field_match::FieldMatchType::Exact(field_match::Exact {
            value: canonical(value, bitwidth),
        })),
    }]
}

fn table_entry(
    table_id: u32,
    key: u128,
    bitwidth: u32,
    action: table_action::Type,
) -> entity::Entity {
    entity::Entity::TableEntry(TableEntry {
        table_id,
        r#match: exact(key, bitwidth),
        action: Some(TableAction {
            r#type: Some(action),
        }),
        priority: 0,
        is_default_action: false,
    })
}

fn member_entity(id: u32, hop: &Hop) -> entity::Entity {
    entity::Entity::ActionProfileMember(ActionProfileMember {
        action_profile_id: PROFILE_SELECTOR,
        member_id: id,
        action: Some(Action {
            action_id: ACTION_FORWARD,
            params: vec![
                param(1, u128::from(u32::from(*hop.addr.ip())), 32),
                param(2, u128::from(hop.addr.port()), 16),
                param(3, u128::from(hop.rewrite.is_some()), 1),
                param(4, hop.rewrite.unwrap_or(0), 128),
            ],
        }),
    })
}

fn group_entity(id: u32, members: &[(u32, u32)]) -> entity::Entity {
    entity::Entity::ActionProfileGroup(ActionProfileGroup {
        action_profile_id: PROFILE_SELECTOR,
        group_id: id,
        members: members
            .iter()
            .map(|(m, w)| action_profile_group::Member {
                member_id: *m,
                // Weights are at most WEIGHT_TOTAL_MAX (checked by plan and apply).
                weight: *w as i32,
            })
            .collect(),
        max_size: WEIGHT_TOTAL_MAX as i32,
    })
}

fn group_table_entity(id: u32) -> entity::Entity {
    table_entry(
        TABLE_GROUP,
        u128::from(id),
        32,
        table_action::Type::ActionProfileGroupId(id),
    )
}

fn source_entity(ip: Ipv4Addr) -> entity::Entity {
    table_entry(
        TABLE_SOURCE,
        u128::from(u32::from(ip)),
        32,
        table_action::Type::Action(Action {
            action_id: ACTION_ALLOW_SOURCE,
            params: Vec::new(),
        }),
    )
}

fn local_entity(key: u128, addr: SocketAddrV4) -> entity::Entity {
    table_entry(
        TABLE_LOCAL,
        key,
        128,
        table_action::Type::Action(Action {
            action_id: ACTION_DELIVER_LOCAL,
            params: vec![
                param(1, u128::from(u32::from(*addr.ip())), 32),
                param(2, u128::from(addr.port()), 16),
            ],
        }),
    )
}

fn route_entity(key: u128, route: Route) -> entity::Entity {
    table_entry(
        TABLE_ROUTE,
        key,
        128,
        table_action::Type::Action(Action {
            action_id: ACTION_SET_GROUP,
            params: vec![
                param(1, u128::from(route.group), 32),
                param(2, u128::from(route.weight_total), 32),
            ],
        }),
    )
}

#[cfg(test)]
#[path = "entries_tests.rs"]
mod tests;
