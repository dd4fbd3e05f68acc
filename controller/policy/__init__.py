"""The ModelRollout policy: models, loading with precise errors, and the CRD schema.

Import the models and the loader from here; `controller.policy.crd` turns the
models into the Kubernetes CRD.
"""

from controller.policy.causes import Cause
from controller.policy.durations import Duration, format_duration, parse_duration
from controller.policy.loader import (
    LoadedPolicy,
    check_files,
    check_text,
    load_file,
    load_text,
    parse_object,
)
from controller.policy.model import (
    API_GROUP,
    API_VERSION,
    KIND,
    OVERALL,
    AdvanceOn,
    Analysis,
    Cohort,
    HeaderMatch,
    MetricSpec,
    ModelRollout,
    NoData,
    NoDataAction,
    NoDataTimeout,
    RolloutSpec,
    Shadow,
    Step,
    Traffic,
    VersionRef,
)
from controller.policy.regex import RegexDialect
from controller.policy.routers import CAPABILITIES, RouterCapabilities, RouterKind
from controller.policy.templates import PLACEHOLDERS, TEMPLATES, MetricKind, Template, Unit

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "CAPABILITIES",
    "KIND",
    "OVERALL",
    "PLACEHOLDERS",
    "TEMPLATES",
    "AdvanceOn",
    "Analysis",
    "Cause",
    "Cohort",
    "Duration",
    "HeaderMatch",
    "LoadedPolicy",
    "MetricKind",
    "MetricSpec",
    "ModelRollout",
    "NoData",
    "NoDataAction",
    "NoDataTimeout",
    "RegexDialect",
    "RolloutSpec",
    "RouterCapabilities",
    "RouterKind",
    "Shadow",
    "Step",
    "Template",
    "Traffic",
    "Unit",
    "VersionRef",
    "check_files",
    "check_text",
    "format_duration",
    "load_file",
    "load_text",
    "parse_duration",
    "parse_object",
]
