"""A budget with both count and ratio (or neither), given to a deployment, is refused in one
sentence ("give exactly one of count or ratio"), not in jsonschema's words ("... is valid
under each of {'properties': ..."), which the Prefect server cannot be made to change."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.flow

SENTENCE = "give exactly one of count or ratio; this budget gives both (count 4, ratio 0.5)"


def test_parameter_schemas_leave_the_exactly_one_check_to_the_validator():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    from syllabus_flows.compare import compare
    from syllabus_flows.pipeline import pipeline
    from syllabus_flows.stages import select

    for flow in (pipeline, compare, select):
        schema = parameter_schema(flow).model_dump_for_openapi()
        assert "oneOf" not in json.dumps(schema), flow.name
    schema = parameter_schema(select).model_dump_for_openapi()
    validate({"method": "random", "scores": [], "budget": {"count": 4, "ratio": 0.5}}, schema, raise_on_error=True)
    with pytest.raises(ValidationError, match="0 is less than the minimum of 1"):  # the other checks stay
        validate({"method": "random", "scores": [], "budget": {"count": 0}}, schema, raise_on_error=True)
    with pytest.raises(ValidationError, match="'counts' was unexpected"):
        validate({"method": "random", "scores": [], "budget": {"counts": 4}}, schema, raise_on_error=True)


@pytest.mark.parametrize("budget, given", [({"count": 4, "ratio": 0.5}, "both (count 4, ratio 0.5)"), ({}, "neither")])
def test_a_deployment_run_with_a_bad_budget_fails_in_one_sentence(budget, given):
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from syllabus_flows.stages import select

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(select)
        deployment_id = client.create_deployment(flow_id, f"budget-{len(budget)}", enforce_parameter_schema=True,
                                                 parameter_openapi_schema=select.parameters.model_dump_for_openapi())
        run = client.create_flow_run_from_deployment(  # the server accepts it: no schema text
            deployment_id, parameters={"method": "random", "scores": [], "budget": budget})
    state = run_flow(select, flow_run=run, parameters=run.parameters, return_type="state")  # as a worker runs it
    with get_client(sync_client=True) as client:
        final = client.read_flow_run(run.id).state
    assert state.is_failed() and final.is_failed()
    assert f"budget: give exactly one of count or ratio; this budget gives {given}" in final.message, final.message
    assert "valid under" not in final.message and "Value error" not in final.message


def test_the_pipeline_parameters_say_it_in_one_sentence_too():
    from pydantic import ValidationError

    from syllabus.pipeline.config import PipelineParams

    with pytest.raises(ValidationError) as caught:
        PipelineParams(budget={"count": 4, "ratio": 0.5})
    (error,) = caught.value.errors()
    assert error["loc"] == ("budget",) and error["msg"] == SENTENCE
    assert PipelineParams(budget={"ratio": 0.5}).budget.ratio == 0.5
