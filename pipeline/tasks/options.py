"""Luigi parameters generated from the option dataclasses of ganmodels.

A training task declares which option classes it takes with `@takes_options(...)`; each
field becomes a parameter of the same name, default and help text (a choice field a
ChoiceParameter, a bool one an explicitly parsed BoolParameter, so `--skips false` works),
and `build_options` makes the frozen, validated object from the task's values. A field
marked affects_result=False becomes an insignificant parameter: it does not enter the
task's hash. Nothing is renamed on the way, so a value's name is the same on the command
line, in luigi.cfg, in training_options.json and in the library.
"""
import dataclasses

import luigi

_PARAMETER_TYPES = {int: luigi.IntParameter, float: luigi.FloatParameter, str: luigi.Parameter}


def parameter(field: dataclasses.Field) -> luigi.Parameter:
    """The Luigi parameter of one option field."""
    common = dict(default=field.default, description=field.metadata.get("help", ""),
                  significant=field.metadata.get("affects_result", True))
    if field.type is bool:
        return luigi.BoolParameter(parsing=luigi.BoolParameter.EXPLICIT_PARSING, **common)
    if field.metadata.get("choices"):
        return luigi.ChoiceParameter(choices=field.metadata["choices"], var_type=field.type, **common)
    if field.type not in _PARAMETER_TYPES:
        raise TypeError(f"option {field.name} of type {field.type} has no Luigi parameter type")
    return _PARAMETER_TYPES[field.type](**common)


def takes_options(*option_classes):
    """A class decorator adding a parameter for every field of the option classes that the task
    (or a task it inherits from) does not declare already; a field without a default (the image
    size, which the data decides) must be declared already."""
    def decorate(task_class):
        for option_class in option_classes:
            for field in dataclasses.fields(option_class):
                if isinstance(getattr(task_class, field.name, None), luigi.Parameter):
                    continue
                if field.default is dataclasses.MISSING:
                    raise TypeError(f"{task_class.__name__} must declare {field.name}, which has no default")
                generated = parameter(field)
                generated.__set_name__(task_class, field.name)  # what a class body's assignment does
                setattr(task_class, field.name, generated)
        return task_class
    return decorate


def build_options(option_class, task: luigi.Task, **given):
    """option_class from the task's parameters of the same names (and `given` values for other fields)."""
    names = [field.name for field in dataclasses.fields(option_class) if field.name not in given]
    return option_class(**{name: getattr(task, name) for name in names}, **given)
