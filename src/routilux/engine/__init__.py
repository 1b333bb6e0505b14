"""The Routilux workflow engine: routines, flows, jobs and runtimes. No web imports here."""

from routilux.bus.status import JobStatus
from routilux.engine.errors import (
    ConfigError,
    DSLError,
    FlowValidationError,
    IllegalTransition,
    JobTerminated,
    Problem,
    RoutiluxError,
    SlotFull,
    UnknownEvent,
    UnknownRoutine,
    UnknownRoutineClass,
    UnknownSlot,
)
from routilux.engine.flow import (
    Connection,
    ErrorHandler,
    Execution,
    Flow,
    PolicySpec,
    RoutineSpec,
)
from routilux.engine.job import Entry, Job, JobOptions
from routilux.engine.plan import FlowPlan, ValidationReport, compile_flow, validate_flow
from routilux.engine.policies import (
    ActivationPolicy,
    AllSlotsReady,
    BatchSize,
    Custom,
    Immediate,
    TimeInterval,
    all_slots_ready,
    batch_size,
    custom,
    immediate,
    time_interval,
)
from routilux.engine.records import RoutineState
from routilux.engine.registry import Registry, default_registry
from routilux.engine.routine import Context, NoConfig, Routine, ThreadContext
from routilux.engine.runtime import Engine, EngineSettings, Runtime
from routilux.engine.slots import QueueStatus, SlotSpec

__all__ = [
    "ActivationPolicy", "AllSlotsReady", "BatchSize", "ConfigError", "Connection", "Context", "Custom",
    "DSLError", "Engine", "EngineSettings", "Entry", "ErrorHandler", "Execution", "Flow", "FlowPlan",
    "FlowValidationError", "IllegalTransition", "Immediate", "Job", "JobOptions", "JobStatus",
    "JobTerminated", "NoConfig", "PolicySpec", "Problem", "QueueStatus", "Registry", "Routine",
    "RoutineSpec", "RoutineState", "RoutiluxError", "Runtime", "SlotFull", "SlotSpec", "ThreadContext",
    "TimeInterval", "UnknownEvent", "UnknownRoutine", "UnknownRoutineClass", "UnknownSlot",
    "ValidationReport", "all_slots_ready", "batch_size", "compile_flow", "custom", "default_registry",
    "immediate", "time_interval", "validate_flow",
]
