import pytest

from agent.templating import TemplateError, Templates


def test_whole_expression_keeps_native_type() -> None:
    t = Templates()
    assert t.render("{{ params.n }}", {"params": {"n": 10}}) == 10
    assert t.render("x-{{ params.n }}", {"params": {"n": 10}}) == "x-10"
    assert t.render({"a": ["{{ params.n }}"]}, {"params": {"n": 1}}) == {"a": [1]}


def test_undefined_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(TemplateError):
        Templates().render("{{ params.missing }}", {"params": {}})
    with pytest.raises(TemplateError):
        Templates().render("a {{ params.missing }}", {"params": {}})


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ params.__class__ }}",
        "{{ params.pop('x') }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_sandbox_refuses_unsafe_access(source: str) -> None:
    with pytest.raises(TemplateError):
        Templates().render(source, {"params": {"x": 1}})


def test_check_names_allowed_roots_and_members() -> None:
    t = Templates()
    t.check("checks.a.ok and params.p == 1", expression=True, allowed={"checks": ["a"], "params": ["p"]})
    with pytest.raises(TemplateError, match=r"unknown checks\.b"):
        t.check("checks.b.ok", expression=True, allowed={"checks": ["a"], "params": []})
    with pytest.raises(TemplateError, match="unknown name 'alert'"):
        t.check("{{ alert.labels }}", expression=False, allowed={"params": []})
