"""The syscall methods, written once for the blocking and the asyncio client.

Each method builds the request the original SDK sent (same parameter names and defaults) and
hands it to ``self._call(opcode, request)``. The blocking client's ``_call`` returns the reply
dict; the asyncio client's returns an awaitable of it. So ``client.store("k", 1)`` is a dict and
``await aclient.store("k", 1)`` is the same dict, from one definition.

Requests leave out parameters left at ``None``: the kernel then applies its defaults, which are
the original's.
"""

from __future__ import annotations

from typing import Any, Dict, Generic, Iterable, List, Mapping, Optional, TypeVar, Union

from .protocol import SyscallOp

_R = TypeVar("_R")

#: A JSON-compatible value (what messages, stored values and event data may be).
JSON = Any


def _request(**fields: Any) -> Dict[str, Any]:
    """A request with the fields that were given (``None`` means "the kernel's default")."""
    return {k: v for k, v in fields.items() if v is not None}


def _millis(seconds: Optional[float]) -> Optional[int]:
    """Seconds as whole milliseconds, rounded up so a positive wait never becomes zero."""
    if seconds is None:
        return None
    if seconds < 0:
        raise ValueError(f"a wait must not be negative, got {seconds}")
    ms = int(seconds * 1000)
    return ms + 1 if ms < seconds * 1000 else ms


def _target(name: Optional[str], agent_id: Optional[int]) -> Dict[str, Any]:
    """`{id}` or `{name}` of a request that names an agent."""
    if agent_id is None and name is None:
        raise ValueError("name the agent: give name= or agent_id=")
    return _request(id=agent_id, name=name)


class SyscallApi(Generic[_R]):
    """The syscalls every client has. ``_R`` is what a call returns: a dict, or an awaitable of
    one."""

    def _call(self, opcode: int, request: Any = None) -> _R:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- kernel ------------------------------------------------------------------------------

    def hello(self) -> _R:
        """HELLO: ``{success, protocol_version, kernel_version, features}``."""
        return self._call(SyscallOp.SYS_HELLO, {})

    # ---- LLM ---------------------------------------------------------------------------------

    def think(
        self,
        prompt: str,
        image: Optional[Dict[str, str]] = None,
        system_instruction: Optional[str] = None,
        thinking_level: Optional[str] = None,
        temperature: Optional[float] = None,
        max_tokens: Optional[int] = None,
        model: Optional[str] = None,
        tools: Optional[List[Dict[str, Any]]] = None,
        *,
        async_: bool = False,
        request_id: Optional[int] = None,
    ) -> _R:
        """THINK: asks the kernel's shared LLM. ``image`` is ``{"data": <base64>, "mime_type":
        ...}``; ``thinking_level`` is low, medium or high. Returns ``{success, content, tokens}``
        (plus usage, provider, model, queue_ms and tool_calls where the kernel has them). With
        ``async_=True`` the reply is an acknowledgement and the result arrives through
        ``poll_async()``."""
        return self._call(
            SyscallOp.SYS_THINK,
            _request(
                prompt=prompt,
                image=image,
                system_instruction=system_instruction,
                thinking_level=thinking_level,
                temperature=temperature,
                max_tokens=max_tokens,
                model=model,
                tools=tools,
                request_id=request_id,
                **({"async": True} if async_ else {}),
            ),
        )

    def llm_report(self, tokens: int, success: bool = True) -> _R:
        """LLM_REPORT: charges ``tokens`` used by a model this agent called itself against its
        quota. Returns ``{success, tokens, quota_exceeded}``."""
        return self._call(SyscallOp.SYS_LLM_REPORT, {"tokens": tokens, "success": success})

    def llm_stats(self, agent_id: Optional[int] = None) -> _R:
        """LLM_STATS: the LLM scheduler (policy, calls in flight, requests queued) and, per
        caller this client may see, calls, errors, tokens in and out, queue wait and weight.
        Returns ``{success, provider, model, scheduler, agents}``."""
        return self._call(
            SyscallOp.SYS_LLM_STATS, {} if agent_id is None else {"agent_id": agent_id}
        )

    def llm_config(
        self, scheduler: Optional[str] = None, max_in_flight: Optional[int] = None
    ) -> _R:
        """LLM_CONFIG: switches the LLM scheduler's policy (``vtc``, ``fifo``,
        ``round_robin``) and/or its in-flight limit while it is idle (root or the kernel's
        user only); with neither, only reads them. Returns ``{success, scheduler}``."""
        return self._call(
            SyscallOp.SYS_LLM_CONFIG,
            _request(scheduler=scheduler, max_in_flight=max_in_flight),
        )

    # ---- host access -------------------------------------------------------------------------

    def exec(
        self,
        command: str,
        cwd: Optional[str] = None,
        timeout: int = 30,
        *,
        async_: bool = False,
        request_id: Optional[int] = None,
        argv: Optional[Iterable[str]] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> _R:
        """EXEC: runs a shell command (inside the caller's sandbox, for an agent), or with
        ``argv`` a program without a shell; ``env`` adds to a clean environment. Returns
        ``{success, stdout, stderr, exit_code}`` (plus ``signal``, ``timed_out``,
        ``truncated`` when they apply); ``success`` is ``exit_code == 0``."""
        return self._call(
            SyscallOp.SYS_EXEC,
            _request(
                command=command,
                argv=list(argv) if argv is not None else None,
                cwd=cwd,
                timeout=timeout,
                env=dict(env) if env is not None else None,
                request_id=request_id,
                **({"async": True} if async_ else {}),
            ),
        )

    def read_file(
        self, path: str, *, offset: Optional[int] = None, limit: Optional[int] = None
    ) -> _R:
        """READ: ``{success, content, size}`` of a host file the caller may read (an absolute
        path); ``offset`` and ``limit`` (bytes) read a part of it."""
        return self._call(SyscallOp.SYS_READ, _request(path=path, offset=offset, limit=limit))

    def write_file(
        self, path: str, content: str, mode: str = "write", *, create_dirs: bool = False
    ) -> _R:
        """WRITE: writes (``mode="write"``) or appends (``mode="append"``) ``content``;
        ``create_dirs`` creates missing parent directories. Returns ``{success,
        bytes_written}`` once the data is on disk."""
        return self._call(
            SyscallOp.SYS_WRITE,
            _request(path=path, content=content, mode=mode, create_dirs=create_dirs or None),
        )

    def http(
        self,
        url: str,
        method: str = "GET",
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[str] = None,
        timeout: int = 30,
        *,
        async_: bool = False,
        request_id: Optional[int] = None,
    ) -> _R:
        """HTTP: a request made by the kernel for the caller, within its allowed domains.
        Returns ``{success, status_code, body}``."""
        return self._call(
            SyscallOp.SYS_HTTP,
            _request(
                url=url,
                method=method,
                headers=dict(headers) if headers is not None else None,
                body=body,
                timeout=timeout,
                request_id=request_id,
                **({"async": True} if async_ else {}),
            ),
        )

    def poll_async(self, max_results: int = 10, wait: Optional[float] = None) -> _R:
        """ASYNC_POLL: results of requests sent with ``async_=True``: ``{success, results:
        [{request_id, opcode, opcode_name, payload}], count}``. ``wait`` (seconds) blocks until
        a result is ready or the time is up."""
        return self._call(
            SyscallOp.SYS_ASYNC_POLL, _request(max=max_results, wait_ms=_millis(wait))
        )

    # ---- agents ------------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        script: str,
        sandboxed: bool = True,
        network: bool = False,
        limits: Optional[Dict[str, Any]] = None,
        restart_policy: str = "never",
        max_restarts: int = 5,
        restart_window: int = 300,
        python: Optional[str] = None,
        *,
        args: Optional[Iterable[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        interpreter: Optional[str] = None,
        binds: Optional[List[Union[str, Dict[str, Any]]]] = None,
        grace_ms: Optional[int] = None,
        permissions: Optional[Dict[str, Any]] = None,
        level: Optional[str] = None,
        group: Optional[str] = None,
        restart_backoff_ms: Optional[int] = None,
    ) -> _R:
        """SPAWN: starts ``script`` as a new agent. ``limits`` takes ``memory`` (bytes or
        "256M"), ``cpu`` (a fraction of a core), ``cpu_quota``/``cpu_period`` (µs),
        ``cpu_shares``, ``max_pids`` and ``disk``. Returns ``{id, name, pid, status,
        restart_policy, isolation}``, or ``{success: False, error}``: test ``"id" in reply``, as
        with the original."""
        return self._call(
            SyscallOp.SYS_SPAWN,
            _request(
                name=name,
                script=script,
                sandboxed=sandboxed,
                network=network,
                limits=limits,
                restart_policy=restart_policy,
                max_restarts=max_restarts,
                restart_window=restart_window,
                python=python,
                args=list(args) if args is not None else None,
                env=dict(env) if env is not None else None,
                interpreter=interpreter,
                binds=binds,
                grace_ms=grace_ms,
                permissions=permissions,
                level=level,
                group=group,
                restart_backoff_ms=restart_backoff_ms,
            ),
        )

    def pause(self, name: Optional[str] = None, agent_id: Optional[int] = None) -> _R:
        """PAUSE: freezes an agent. Returns ``{success, paused, agent_id}``."""
        return self._call(SyscallOp.SYS_PAUSE, _target(name, agent_id))

    def resume(self, name: Optional[str] = None, agent_id: Optional[int] = None) -> _R:
        """RESUME: thaws a paused agent. Returns ``{success, resumed, agent_id}``."""
        return self._call(SyscallOp.SYS_RESUME, _target(name, agent_id))

    def wait(
        self,
        name: Optional[str] = None,
        agent_id: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> _R:
        """WAIT (this kernel's): blocks until the agent exits or ``timeout`` seconds pass.
        Returns ``{success, agent_id, exited, exit_code?, signal?, oom, reason?}``."""
        return self._call(
            SyscallOp.SYS_WAIT, {**_target(name, agent_id), **_request(timeout_ms=_millis(timeout))}
        )

    def logs(
        self,
        name: Optional[str] = None,
        agent_id: Optional[int] = None,
        lines: int = 100,
        offset: Optional[int] = None,
        wait: Optional[float] = None,
    ) -> _R:
        """LOGS (this kernel's): the agent's output (stdout and stderr): the last ``lines``
        lines, or everything from byte ``offset`` on; ``wait`` (seconds) waits for new output.
        Returns ``{success, agent_id, text, next_offset, running, first_offset}``."""
        return self._call(
            SyscallOp.SYS_LOGS,
            {**_target(name, agent_id), **_request(lines=lines, offset=offset, wait_ms=_millis(wait))},
        )

    # ---- supervisor groups (this kernel's) -----------------------------------------------------

    def group_create(
        self,
        name: str,
        strategy: str = "one_for_one",
        intensity: int = 1,
        period: float = 5.0,
        parent: Optional[str] = None,
        shutdown_ms: Optional[int] = None,
    ) -> _R:
        """GROUP_CREATE: a supervisor group (``strategy`` one_for_one, one_for_all or
        rest_for_one; at most ``intensity`` restarts within ``period`` seconds, then it stops
        its children and escalates to ``parent``). Agents join with ``spawn(..., group=name)``.
        Returns ``{success, group}``."""
        return self._call(
            SyscallOp.SYS_GROUP_CREATE,
            _request(
                name=name,
                strategy=strategy,
                intensity=intensity,
                period=period,
                parent=parent,
                shutdown_ms=shutdown_ms,
            ),
        )

    def group_list(self, name: Optional[str] = None) -> _R:
        """GROUP_LIST: ``{success, groups}``, each ``{name, strategy, intensity, period,
        parent?, shutdown_ms, state, restarts, children}`` (children in start order)."""
        return self._call(SyscallOp.SYS_GROUP_LIST, _request(name=name))

    def group_stop(self, name: str) -> _R:
        """GROUP_STOP: stops the group's tree for good, children in reverse start order, and
        removes it. Returns ``{success, name, stopped}`` (agent ids, in stop order) once
        everything is down."""
        return self._call(SyscallOp.SYS_GROUP_STOP, {"name": name})

    # ---- messages ----------------------------------------------------------------------------

    def register_name(self, name: str) -> _R:
        """REGISTER: makes the caller reachable as ``name``. Returns ``{success, agent_id,
        name}``."""
        return self._call(SyscallOp.SYS_REGISTER, {"name": name})

    def send_message(
        self,
        message: JSON,
        to: Optional[int] = None,
        to_name: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> _R:
        """SEND: delivers ``message`` (any JSON value) to agent id ``to`` or name ``to_name``
        (a registered name, or an agent's spawn name). Returns ``{success, delivered_to}``.
        A full mailbox fails with ``limit_exceeded``, unless ``timeout`` (seconds) says how
        long to wait for room."""
        return self._call(
            SyscallOp.SYS_SEND,
            _request(message=message, to=to, to_name=to_name, timeout_ms=_millis(timeout)),
        )

    def send_messages(
        self,
        messages: Iterable[JSON],
        to: Optional[int] = None,
        to_name: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> _R:
        """SEND_BATCH (this kernel's): delivers all of ``messages`` to one recipient, in
        order, all or none, in one round trip. Returns ``{success, delivered_to,
        delivered}``."""
        return self._call(
            SyscallOp.SYS_SEND_BATCH,
            _request(
                messages=list(messages), to=to, to_name=to_name, timeout_ms=_millis(timeout)
            ),
        )

    def recv_messages(self, max_messages: int = 10, wait: Optional[float] = None) -> _R:
        """RECV: up to ``max_messages`` messages from the caller's mailbox: ``{success, messages:
        [{from, from_name, message, age_ms}], count}``. ``wait`` (seconds) blocks until one
        arrives."""
        return self._call(SyscallOp.SYS_RECV, _request(max=max_messages, wait_ms=_millis(wait)))

    def broadcast(self, message: JSON, include_self: bool = False) -> _R:
        """BROADCAST: ``message`` to every agent. Returns ``{success, delivered_count}``."""
        return self._call(
            SyscallOp.SYS_BROADCAST, {"message": message, "include_self": include_self}
        )

    # ---- permissions -------------------------------------------------------------------------

    def get_permissions(self, agent_id: Optional[int] = None) -> _R:
        """GET_PERMS: ``{success, permissions}`` of the caller (or of ``agent_id``)."""
        return self._call(SyscallOp.SYS_GET_PERMS, _request(agent_id=agent_id))

    def set_permissions(
        self,
        permissions: Optional[Dict[str, Any]] = None,
        agent_id: Optional[int] = None,
        level: Optional[str] = None,
    ) -> _R:
        """SET_PERMS: sets a ``level`` (unrestricted, standard, sandboxed, readonly, minimal) or
        explicit ``permissions``, for the caller or ``agent_id``. Returns ``{success,
        agent_id}``."""
        return self._call(
            SyscallOp.SYS_SET_PERMS,
            _request(permissions=permissions, agent_id=agent_id, level=level),
        )

    # ---- state -------------------------------------------------------------------------------

    def store(
        self,
        key: str,
        value: JSON,
        scope: str = "global",
        ttl: Optional[float] = None,
        *,
        if_version: Optional[int] = None,
    ) -> _R:
        """STORE: ``value`` under ``key`` in scope global, agent or session, for ``ttl``
        seconds (``None``: forever). ``if_version`` makes it a compare-and-set. Returns
        ``{success, key}``."""
        return self._call(
            SyscallOp.SYS_STORE,
            _request(key=key, value=value, scope=scope, ttl=ttl, if_version=if_version),
        )

    def fetch(self, key: str) -> _R:
        """FETCH: ``{success, exists, value, scope}`` of ``key``."""
        return self._call(SyscallOp.SYS_FETCH, {"key": key})

    def delete_key(self, key: str) -> _R:
        """DELETE: ``{success, deleted}``."""
        return self._call(SyscallOp.SYS_DELETE, {"key": key})

    def list_keys(self, prefix: str = "") -> _R:
        """KEYS: ``{success, keys, count}`` of the keys starting with ``prefix``."""
        return self._call(SyscallOp.SYS_KEYS, {"prefix": prefix})

    # ---- events ------------------------------------------------------------------------------

    def subscribe(self, event_types: Union[str, Iterable[str]]) -> _R:
        """SUBSCRIBE: to event types such as AGENT_EXITED or a custom name. Returns
        ``{success, subscribed}``."""
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        return self._call(SyscallOp.SYS_SUBSCRIBE, {"event_types": types})

    def unsubscribe(self, event_types: Union[str, Iterable[str], None] = None) -> _R:
        """UNSUBSCRIBE: from ``event_types``, or from everything when ``None``."""
        if event_types is None:
            return self._call(SyscallOp.SYS_UNSUBSCRIBE, {"all": True})
        types = [event_types] if isinstance(event_types, str) else list(event_types)
        return self._call(SyscallOp.SYS_UNSUBSCRIBE, {"event_types": types})

    def poll_events(self, max_events: int = 100, wait: Optional[float] = None) -> _R:
        """POLL_EVENTS: ``{success, events: [{type, data, source_agent_id, timestamp}], count}``.
        ``wait`` (seconds) blocks until an event arrives."""
        return self._call(
            SyscallOp.SYS_POLL_EVENTS, _request(max=max_events, wait_ms=_millis(wait))
        )

    def emit_event(self, event_type: str, data: JSON = None) -> _R:
        """EMIT: an event to its subscribers. Returns ``{success, event}``."""
        return self._call(
            SyscallOp.SYS_EMIT, {"event_type": event_type, "data": {} if data is None else data}
        )

    # ---- metrics -----------------------------------------------------------------------------

    def get_system_metrics(self) -> _R:
        """METRICS_SYSTEM: the host's CPU, memory, disk and network figures."""
        return self._call(SyscallOp.SYS_METRICS_SYSTEM, {})

    def get_agent_metrics(self, agent_id: Optional[int] = None) -> _R:
        """METRICS_AGENT: one agent's figures (the caller's own when ``agent_id`` is None)."""
        return self._call(SyscallOp.SYS_METRICS_AGENT, _request(agent_id=agent_id))

    def get_all_agent_metrics(self) -> _R:
        """METRICS_ALL_AGENTS: ``{success, agents, count}``."""
        return self._call(SyscallOp.SYS_METRICS_ALL_AGENTS, {})

    def get_cgroup_metrics(self, cgroup_path: Optional[str] = None) -> _R:
        """METRICS_CGROUP: cpu, memory and pids figures of a cgroup."""
        return self._call(SyscallOp.SYS_METRICS_CGROUP, _request(cgroup_path=cgroup_path))

    # ---- audit -------------------------------------------------------------------------------

    def get_audit_log(
        self,
        category: Optional[str] = None,
        agent_id: Optional[int] = None,
        since_id: int = 0,
        limit: int = 100,
    ) -> _R:
        """GET_AUDIT_LOG: ``{success, count, entries}``, filtered by category and agent."""
        return self._call(
            SyscallOp.SYS_GET_AUDIT_LOG,
            _request(category=category, agent_id=agent_id, since_id=since_id, limit=limit),
        )

    def set_audit_config(
        self,
        max_entries: Optional[int] = None,
        log_syscalls: Optional[bool] = None,
        log_security: Optional[bool] = None,
        log_lifecycle: Optional[bool] = None,
        log_ipc: Optional[bool] = None,
        log_state: Optional[bool] = None,
        log_resource: Optional[bool] = None,
        log_network: Optional[bool] = None,
        log_world: Optional[bool] = None,
    ) -> _R:
        """SET_AUDIT_CONFIG: changes what is audited; ``None`` leaves a setting as it is.
        Returns ``{success, config}``."""
        return self._call(
            SyscallOp.SYS_SET_AUDIT_CONFIG,
            _request(
                max_entries=max_entries,
                log_syscalls=log_syscalls,
                log_security=log_security,
                log_lifecycle=log_lifecycle,
                log_ipc=log_ipc,
                log_state=log_state,
                log_resource=log_resource,
                log_network=log_network,
                log_world=log_world,
            ),
        )

    # ---- record and replay -------------------------------------------------------------------

    def start_recording(
        self,
        include_think: bool = True,
        include_http: bool = True,
        include_exec: bool = True,
        filter_agents: Optional[List[int]] = None,
        max_entries: int = 10000,
    ) -> _R:
        """RECORD_START: records the syscalls chosen. Returns ``{success, recording}``."""
        return self._call(
            SyscallOp.SYS_RECORD_START,
            _request(
                include_think=include_think,
                include_http=include_http,
                include_exec=include_exec,
                filter_agents=filter_agents,
                max_entries=max_entries,
            ),
        )

    def stop_recording(self) -> _R:
        """RECORD_STOP: ``{success, recording: False, entries_recorded}``."""
        return self._call(SyscallOp.SYS_RECORD_STOP, {})

    def get_recording_status(self, export: bool = False) -> _R:
        """RECORD_STATUS: ``{success, state, recording, entry_count}``, plus ``recording_data``
        when ``export`` is true."""
        return self._call(SyscallOp.SYS_RECORD_STATUS, {"export": export})

    def start_replay(self, recording: str) -> _R:
        """REPLAY_START: replays an exported recording. Returns ``{success, total_entries}``."""
        return self._call(SyscallOp.SYS_REPLAY_START, {"recording": recording})

    def get_replay_status(self) -> _R:
        """REPLAY_STATUS: ``{success, state, progress_percent, entries_replayed,
        entries_skipped}``."""
        return self._call(SyscallOp.SYS_REPLAY_STATUS, {})
