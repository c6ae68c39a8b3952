"""The control plane's exceptions. Every message says what to do next; the CLI prints it and exits 1."""


class ControlError(RuntimeError):
    """A problem an operator can act on (the message says how)."""


class RuntimeStartError(ControlError):
    """The embedded runtime (Kafka, Flink, a model server) could not be started, found or stopped."""


class MLServerError(RuntimeStartError):
    """MLServer could not be started or stopped."""


class SubmissionError(ControlError):
    """`flink run` refused or failed to submit a job."""


class JobError(ControlError):
    """A submitted job failed, did not start, or did not stop in time."""


class ScheduleError(ControlError):
    """A schedule file or value is invalid."""


class ModelNotReadyError(ControlError):
    """A model cannot serve (artifact checksum, model file, model server, feature version): not deployed."""


class RegistryError(ControlError):
    """A model registry operation was refused (unknown model, stage change not allowed now)."""


class RollError(ControlError):
    """A roll or rollback could not be started or carried out."""
