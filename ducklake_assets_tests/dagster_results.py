"""What a user reads from a Dagster run in a test: an asset's materialization metadata, a step's error."""

import dagster as dg


def materialization(result: dg.ExecuteInProcessResult, name: str) -> dict:
    [event] = result.asset_materializations_for_node(name)
    return {key: getattr(value, "value", value) for key, value in event.metadata.items()}


def step_failure(result: dg.ExecuteInProcessResult) -> str:
    """The error a user reads for the failed step (Dagster's wrapper and the library's error under it)."""
    [failure] = [event for event in result.all_events if event.is_step_failure]
    error, messages = failure.step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)
