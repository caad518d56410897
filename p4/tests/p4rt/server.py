"""A P4Runtime server for tests, built on the PyPI `p4runtime` bindings.

It does what a switch's P4Runtime server does up to the data plane: master arbitration on
StreamChannel (highest election id is primary), SetForwardingPipelineConfig (the P4Info is
kept and every later entity is checked against it), Write and Read. Each entity is validated
against the P4Info: ids exist; exact match values and action parameters are canonical
bytestrings whose *values* fit the declared bit widths; every match field present; actions
allowed for the table (not a DEFAULT_ONLY one); action-profile members and groups referenced
exist; group weights > 0 and their sum within the selector's max_group_size; INSERT of an
existing key, MODIFY/DELETE of a missing one, and DELETE of a member or group still referenced
are refused; table sizes are enforced (`--table-size NAME=N` lowers one, to inject a failure).

Writes are CONTINUE_ON_ERROR: every update is attempted in order; if any fails the RPC fails
with the first failure's code and a message naming each failed update (a real server puts one
p4.v1.Error per update in the status details). Not modelled: roles, packet I/O, digests,
counters, the data plane.

Usage: server.py [--device-id N] [--table-size NAME=N ...] [--log-rpcs]; prints "LISTENING
<port>" once it serves on 127.0.0.1 (ephemeral port) and runs until stdin closes or it is
killed. With --log-rpcs it also prints one stdout line per accepted pipeline or write:
"PIPELINE" and "WRITE insert=I modify=M delete=D" (the caller must read stdout).
"""

import argparse
import os
import sys
import threading
from concurrent import futures

# The p4runtime 1.6.0 wheel's generated modules predate protobuf 4's C++ descriptors.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import grpc  # noqa: E402
from p4.v1 import p4runtime_pb2, p4runtime_pb2_grpc  # noqa: E402
from p4.config.v1 import p4info_pb2  # noqa: E402


class Refused(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(msg):
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, msg)


def value_of(data, bitwidth, what):
    """A canonical bytestring's value, refusing non-canonical forms and values too wide."""
    if len(data) == 0:
        raise invalid(f"{what}: empty bytestring")
    if len(data) > 1 and data[0] == 0:
        raise invalid(f"{what}: not canonical (leading zero byte): {data.hex()}")
    value = int.from_bytes(data, "big")
    if value >> bitwidth:
        raise invalid(f"{what}: value {value:#x} does not fit in {bitwidth} bits")
    return value


class Pipeline:
    """The P4Info, indexed, and the installed entities."""

    def __init__(self, p4info, sizes):
        self.p4info = p4info
        self.actions = {a.preamble.id: a for a in p4info.actions}
        self.tables = {t.preamble.id: t for t in p4info.tables}
        self.profiles = {p.preamble.id: p for p in p4info.action_profiles}
        self.sizes = {}
        for t in p4info.tables:
            if not t.preamble.id or not t.preamble.name:
                raise invalid("table without id or name")
            for ref in t.action_refs:
                if ref.id not in self.actions:
                    raise invalid(f"table {t.preamble.name}: unknown action {ref.id:#x}")
            if t.implementation_id and t.implementation_id not in self.profiles:
                raise invalid(f"table {t.preamble.name}: unknown implementation")
            self.sizes[t.preamble.id] = t.size
            name = t.preamble.name
            for key in (name, t.preamble.alias):
                if key in sizes:
                    self.sizes[t.preamble.id] = sizes[key]
        for p in p4info.action_profiles:
            for tid in p.table_ids:
                if tid not in self.tables:
                    raise invalid(f"profile {p.preamble.name}: unknown table {tid:#x}")
        # table id -> {key tuple: TableEntry}
        self.entries = {tid: {} for tid in self.tables}
        # profile id -> {member id: ActionProfileMember} / {group id: ActionProfileGroup}
        self.members = {pid: {} for pid in self.profiles}
        self.groups = {pid: {} for pid in self.profiles}

    # -- validation helpers

    def check_action(self, action, allowed_ids, what):
        info = self.actions.get(action.action_id)
        if info is None or action.action_id not in allowed_ids:
            raise invalid(f"{what}: action {action.action_id:#x} not allowed here")
        declared = {p.id: p for p in info.params}
        given = [p.param_id for p in action.params]
        if sorted(given) != sorted(declared) or len(set(given)) != len(given):
            raise invalid(f"{what}: params {given} but {info.preamble.name} takes "
                          f"{sorted(declared)}")
        for p in action.params:
            value_of(p.value, declared[p.param_id].bitwidth,
                     f"{what}: {info.preamble.name}.{declared[p.param_id].name}")

    def table_action_ids(self, table):
        return {r.id for r in table.action_refs
                if r.scope != p4info_pb2.ActionRef.DEFAULT_ONLY}

    def key_of(self, table, entry):
        fields = {f.id: f for f in table.match_fields}
        seen = {}
        for m in entry.match:
            f = fields.get(m.field_id)
            if f is None:
                raise invalid(f"{table.preamble.name}: unknown match field {m.field_id}")
            if m.field_id in seen:
                raise invalid(f"{table.preamble.name}: match field {m.field_id} twice")
            if f.match_type != p4info_pb2.MatchField.EXACT or m.WhichOneof("field_match_type") != "exact":
                raise invalid(f"{table.preamble.name}.{f.name}: only exact matches here")
            seen[m.field_id] = value_of(m.exact.value, f.bitwidth,
                                        f"{table.preamble.name}.{f.name}")
        if set(seen) != set(fields):
            raise invalid(f"{table.preamble.name}: exact fields {sorted(fields)} required, "
                          f"got {sorted(seen)}")
        return tuple(sorted(seen.items()))

    # -- updates

    def apply(self, update):
        kind = update.type
        if kind not in (p4runtime_pb2.Update.INSERT, p4runtime_pb2.Update.MODIFY,
                        p4runtime_pb2.Update.DELETE):
            raise invalid("update type unspecified")
        which = update.entity.WhichOneof("entity")
        if which == "table_entry":
            self.apply_table_entry(kind, update.entity.table_entry)
        elif which == "action_profile_member":
            self.apply_member(kind, update.entity.action_profile_member)
        elif which == "action_profile_group":
            self.apply_group(kind, update.entity.action_profile_group)
        else:
            raise Refused(grpc.StatusCode.UNIMPLEMENTED, f"entity {which} not supported")

    def apply_table_entry(self, kind, e):
        table = self.tables.get(e.table_id)
        if table is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"unknown table {e.table_id:#x}")
        name = table.preamble.name
        if e.is_default_action:
            raise invalid(f"{name}: the default action is constant")
        if e.priority != 0:
            raise invalid(f"{name}: priority on an exact-match table")
        key = self.key_of(table, e)
        installed = self.entries[e.table_id]
        if kind == p4runtime_pb2.Update.DELETE:
            if key not in installed:
                raise Refused(grpc.StatusCode.NOT_FOUND, f"{name}: no entry {key}")
            del installed[key]
            return
        which = e.action.WhichOneof("type")
        if table.implementation_id:
            profile = self.profiles[table.implementation_id]
            if which == "action_profile_group_id":
                if e.action.action_profile_group_id not in self.groups[profile.preamble.id]:
                    raise invalid(f"{name}: group {e.action.action_profile_group_id} not installed")
            elif which == "action_profile_member_id":
                if e.action.action_profile_member_id not in self.members[profile.preamble.id]:
                    raise invalid(f"{name}: member {e.action.action_profile_member_id} not installed")
            else:
                raise invalid(f"{name}: entries take an action-profile member or group")
        else:
            if which != "action":
                raise invalid(f"{name}: entries take a direct action")
            self.check_action(e.action.action, self.table_action_ids(table), name)
        if kind == p4runtime_pb2.Update.INSERT:
            if key in installed:
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"{name}: entry {key} exists")
            if len(installed) >= self.sizes[e.table_id]:
                raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{name} is full")
        elif key not in installed:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"{name}: no entry {key}")
        stored = p4runtime_pb2.TableEntry()
        stored.CopyFrom(e)
        installed[key] = stored

    def profile_of(self, pid, what):
        profile = self.profiles.get(pid)
        if profile is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"{what}: unknown action profile {pid:#x}")
        return profile

    def apply_member(self, kind, m):
        profile = self.profile_of(m.action_profile_id, f"member {m.member_id}")
        members = self.members[m.action_profile_id]
        what = f"{profile.preamble.name} member {m.member_id}"
        if kind == p4runtime_pb2.Update.DELETE:
            if m.member_id not in members:
                raise Refused(grpc.StatusCode.NOT_FOUND, f"{what}: not installed")
            for g in self.groups[m.action_profile_id].values():
                if any(x.member_id == m.member_id for x in g.members):
                    raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"{what}: still in group {g.group_id}")
            del members[m.member_id]
            return
        allowed = set()
        for tid in profile.table_ids:
            allowed |= self.table_action_ids(self.tables[tid])
        self.check_action(m.action, allowed, what)
        if kind == p4runtime_pb2.Update.INSERT:
            if m.member_id in members:
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"{what}: exists")
            if len(members) >= profile.size:
                raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{profile.preamble.name} is full")
        elif m.member_id not in members:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"{what}: not installed")
        stored = p4runtime_pb2.ActionProfileMember()
        stored.CopyFrom(m)
        members[m.member_id] = stored

    def apply_group(self, kind, g):
        profile = self.profile_of(g.action_profile_id, f"group {g.group_id}")
        groups = self.groups[g.action_profile_id]
        what = f"{profile.preamble.name} group {g.group_id}"
        if not profile.with_selector:
            raise invalid(f"{what}: the profile has no selector")
        if kind == p4runtime_pb2.Update.DELETE:
            if g.group_id not in groups:
                raise Refused(grpc.StatusCode.NOT_FOUND, f"{what}: not installed")
            for tid in profile.table_ids:
                for e in self.entries[tid].values():
                    if e.action.WhichOneof("type") == "action_profile_group_id" and \
                            e.action.action_profile_group_id == g.group_id:
                        raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                                      f"{what}: still used by a {self.tables[tid].preamble.name} entry")
            del groups[g.group_id]
            return
        seen = set()
        total = 0
        for m in g.members:
            if m.member_id not in self.members[g.action_profile_id]:
                raise invalid(f"{what}: member {m.member_id} not installed")
            if m.member_id in seen:
                raise invalid(f"{what}: member {m.member_id} twice")
            if m.weight <= 0:
                raise invalid(f"{what}: member {m.member_id} weight {m.weight}")
            seen.add(m.member_id)
            total += m.weight
        if not seen:
            raise invalid(f"{what}: no members")
        limit = profile.max_group_size
        if g.max_size and limit and g.max_size > limit:
            raise invalid(f"{what}: max_size {g.max_size} above the profile's {limit}")
        if limit and total > limit:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{what}: weights sum to {total}, above max_group_size {limit}")
        if kind == p4runtime_pb2.Update.INSERT:
            if g.group_id in groups:
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"{what}: exists")
        elif g.group_id not in groups:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"{what}: not installed")
        stored = p4runtime_pb2.ActionProfileGroup()
        stored.CopyFrom(g)
        groups[g.group_id] = stored

    def read(self, entity):
        out = []
        which = entity.WhichOneof("entity")
        if which == "table_entry":
            tid = entity.table_entry.table_id
            for t, entries in self.entries.items():
                if tid in (0, t):
                    for e in entries.values():
                        out.append(p4runtime_pb2.Entity(table_entry=e))
        elif which == "action_profile_member":
            pid = entity.action_profile_member.action_profile_id
            for p, members in self.members.items():
                if pid in (0, p):
                    for m in members.values():
                        out.append(p4runtime_pb2.Entity(action_profile_member=m))
        elif which == "action_profile_group":
            pid = entity.action_profile_group.action_profile_id
            for p, groups in self.groups.items():
                if pid in (0, p):
                    for g in groups.values():
                        out.append(p4runtime_pb2.Entity(action_profile_group=g))
        else:
            raise Refused(grpc.StatusCode.UNIMPLEMENTED, f"read of {which}")
        return out


def election(u):
    return (u.high << 64) | u.low


class Server(p4runtime_pb2_grpc.P4RuntimeServicer):
    def __init__(self, device_id, sizes, log_rpcs=False):
        self.device_id = device_id
        self.sizes = sizes
        self.log_rpcs = log_rpcs
        self.lock = threading.Lock()
        self.primary = None  # the highest election id seen on a live stream
        self.pipeline = None

    def check_primary(self, device_id, election_id, context):
        if device_id != self.device_id:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no device {device_id}")
        if self.primary is None or election(election_id) != self.primary:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not the primary controller")

    def StreamChannel(self, request_iterator, context):
        mine = None
        try:
            for request in request_iterator:
                if request.WhichOneof("update") != "arbitration":
                    continue
                a = request.arbitration
                if a.device_id != self.device_id:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"no device {a.device_id}")
                eid = election(a.election_id)
                if eid == 0:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "election id 0")
                with self.lock:
                    mine = eid
                    if self.primary is None or eid > self.primary:
                        self.primary = eid
                    reply = p4runtime_pb2.StreamMessageResponse()
                    reply.arbitration.device_id = self.device_id
                    reply.arbitration.election_id.high = self.primary >> 64
                    reply.arbitration.election_id.low = self.primary & ((1 << 64) - 1)
                    if eid == self.primary:
                        reply.arbitration.status.code = 0
                        reply.arbitration.status.message = "primary"
                    else:
                        reply.arbitration.status.code = grpc.StatusCode.ALREADY_EXISTS.value[0]
                        reply.arbitration.status.message = "backup"
                yield reply
        finally:
            with self.lock:
                if mine is not None and mine == self.primary:
                    self.primary = None

    def SetForwardingPipelineConfig(self, request, context):
        with self.lock:
            self.check_primary(request.device_id, request.election_id, context)
            if request.action not in (
                    p4runtime_pb2.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
                    p4runtime_pb2.SetForwardingPipelineConfigRequest.VERIFY):
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "only VERIFY and VERIFY_AND_COMMIT")
            try:
                pipeline = Pipeline(request.config.p4info, self.sizes)
            except Refused as e:
                context.abort(e.code, f"P4Info: {e.message}")
            if request.action == p4runtime_pb2.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT:
                self.pipeline = pipeline
                if self.log_rpcs:
                    print("PIPELINE", flush=True)
        return p4runtime_pb2.SetForwardingPipelineConfigResponse()

    def Write(self, request, context):
        with self.lock:
            self.check_primary(request.device_id, request.election_id, context)
            if self.pipeline is None:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no pipeline config")
            failures = []
            for i, update in enumerate(request.updates):
                try:
                    self.pipeline.apply(update)
                except Refused as e:
                    failures.append((i, e))
            if failures:
                i, first = failures[0]
                listed = "; ".join(f"update {j}: {e.message}" for j, e in failures[:8])
                context.abort(first.code, f"{len(failures)} of {len(request.updates)} "
                                          f"updates refused: {listed}")
            if self.log_rpcs:
                kinds = [u.type for u in request.updates]
                print(f"WRITE insert={kinds.count(p4runtime_pb2.Update.INSERT)} "
                      f"modify={kinds.count(p4runtime_pb2.Update.MODIFY)} "
                      f"delete={kinds.count(p4runtime_pb2.Update.DELETE)}", flush=True)
        return p4runtime_pb2.WriteResponse()

    def Read(self, request, context):
        with self.lock:
            if request.device_id != self.device_id:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no device {request.device_id}")
            if self.pipeline is None:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no pipeline config")
            response = p4runtime_pb2.ReadResponse()
            try:
                for entity in request.entities:
                    response.entities.extend(self.pipeline.read(entity))
            except Refused as e:
                context.abort(e.code, e.message)
        yield response


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device-id", type=int, default=1)
    parser.add_argument("--table-size", action="append", default=[],
                        help="NAME=N: hold at most N entries in table NAME (name or alias)")
    parser.add_argument("--log-rpcs", action="store_true",
                        help="print PIPELINE / WRITE lines for accepted RPCs on stdout")
    args = parser.parse_args()
    sizes = {}
    for spec in args.table_size:
        name, _, n = spec.partition("=")
        sizes[name] = int(n)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    p4runtime_pb2_grpc.add_P4RuntimeServicer_to_server(Server(args.device_id, sizes, args.log_rpcs), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"LISTENING {port}", flush=True)
    # Runs until the test closes stdin (or kills the process).
    sys.stdin.read()
    server.stop(grace=None)


if __name__ == "__main__":
    main()
