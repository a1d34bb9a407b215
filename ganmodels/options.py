"""How training options are declared: frozen dataclasses whose fields carry their help text.

Every option of a training run is a field of one of these dataclasses, with its default,
its help text and, for a choice, the values it may take. The pipeline turns the fields
into its Luigi parameters (pipeline.tasks.options), so each default and each piece of
help text lives here and nowhere else, and a value is validated where it is declared.
"""
import dataclasses
from typing import Any

COLLAPSE_ACTIONS = ("warn", "stop")


class OptionError(ValueError):
    """An option value that is refused: the message names the option as the user spells it."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise OptionError(message)


_NO_VALUE = object()


def option(default: Any, help: str, choices: tuple = (), affects_result: bool = True, before: Any = _NO_VALUE) -> Any:
    """A dataclass field with its help text; `choices` lists the values a str field may take.

    affects_result=False marks options that change how fast or how often something happens
    (logging, checkpoints, precision), never which model is trained. `before` is what runs
    saved before the option existed did, where that differs from its default (from_dict).
    """
    return dataclasses.field(default=default, metadata={"help": help, "choices": tuple(choices),
                                                        "affects_result": affects_result,
                                                        "before": default if before is _NO_VALUE else before})


def required(help: str) -> Any:
    """A dataclass field without a default: a value the caller always has (the image size of its data)."""
    return dataclasses.field(metadata={"help": help, "choices": (), "affects_result": True})


def check_choices(options) -> None:
    """Refuse a str field whose value is not one of its declared choices."""
    for field in dataclasses.fields(options):
        choices = field.metadata.get("choices")
        value = getattr(options, field.name)
        require(not choices or value in choices, f"{field.name} must be one of {choices}, got {value!r}")


def from_dict(cls, values: dict):
    """An options dataclass from its asdict form (nested dataclasses included), e.g. read back from JSON.

    A missing option was added after the values were saved: it takes the value those runs had
    (`before`, by default the option's default). An unknown one is an error, since code that does
    not know an option cannot honour it.
    """
    unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no options {sorted(unknown)}: saved by another version of the pipeline?")
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            if "before" in field.metadata:
                kwargs[field.name] = field.metadata["before"]
            continue
        value = values[field.name]
        nested = _dataclass_type(field.type)
        kwargs[field.name] = from_dict(nested, value) if nested and value is not None else value
    return cls(**kwargs)


def _dataclass_type(annotation):
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None
