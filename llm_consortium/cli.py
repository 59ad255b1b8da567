"""``llm consortium …`` commands. Library errors become one-line click errors here."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click

from typing import TYPE_CHECKING

from .defaults import (
    CLUSTERING_ALGORITHMS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    EMBEDDING_BACKENDS,
    JUDGING_METHODS,
)
from .errors import ConfigError, ConsortiumError
from .stored_values import take_warning
from .output import safe_echo
from .terminal import json_dumps, printable

if TYPE_CHECKING:
    from .config import ConsortiumConfig

# The CLI is registered at every ``llm`` start-up (even ``llm --version``), so
# this module imports only click and the error classes; the rest of the plugin
# is imported inside the commands that use it.


class BadInput(click.ClickException):
    """A usage error shown as one line (``Error: …``), exit code 2."""

    exit_code = 2


class OneLineErrorsCommand(click.Command):
    """A command whose usage errors (bad option values included) are one
    ``Error: …`` line on stderr, without click's usage banner."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as ex:
            raise BadInput(ex.format_message()) from None


class ConsortiumGroup(click.Group):
    """``llm consortium``. Its subcommands are built the first time anything
    asks for them, so that the ``llm`` commands that never touch them
    (``llm --version``, ``llm -m …``) do not pay for building them."""

    command_class = OneLineErrorsCommand
    _built = False
    more_commands: tuple[Callable[[click.Group], None], ...] = ()

    def _build(self) -> None:
        if not self._built:
            self._built = True
            add_commands(self)
            for add in self.more_commands:
                add(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._build()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._build()
        return super().get_command(ctx, cmd_name)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's errors into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as ex:
            raise BadInput(str(ex)) from None
        except ConsortiumError as ex:
            raise click.ClickException(str(ex)) from None
        finally:
            warning = take_warning()  # stored values of the wrong type it met
            if warning:
                safe_echo(warning, err=True)

    return wrapper


def parse_strategy_params(items: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a repeated key becomes a list; a bare KEY is ``True``
    (true for a boolean parameter; other parameters say they need a value)."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"Invalid --strategy-param '{item}': expected KEY=VALUE")
        parsed: Any = value.strip() if sep else True
        if key in params:
            existing = params[key]
            params[key] = [*existing, parsed] if isinstance(existing, list) else [existing, parsed]
        else:
            params[key] = parsed
    return params


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by ``save`` and ``run``."""
    options = [
        click.option(
            "-m",
            "--model",
            "models",
            multiple=True,
            help="Model to include (format 'model:count' or 'model'). Multiple allowed.",
        ),
        click.option(
            "-n",
            "--count",
            type=int,
            default=1,
            show_default=True,
            help="Default number of instances (if count not specified per model)",
        ),
        click.option("--arbiter", help="Model to use as arbiter"),
        click.option(
            "--confidence-threshold",
            type=float,
            default=0.8,
            show_default=True,
            help="Minimum confidence threshold (0.0-1.0, or a percentage 1-100)",
        ),
        click.option(
            "--max-iterations",
            type=int,
            default=3,
            show_default=True,
            help="Maximum iterations for convergence",
        ),
        click.option(
            "--min-iterations",
            type=int,
            default=1,
            show_default=True,
            help="Minimum iterations before convergence",
        ),
        click.option("--system", "system_prompt", help="System prompt for consortium members"),
        click.option(
            "--judging-method",
            type=click.Choice(list(JUDGING_METHODS), case_sensitive=False),
            default="default",
            show_default=True,
            help="Judging method for the arbiter (default=synthesis, rank).",
        ),
        click.option(
            "--manual-context/--auto-context",
            default=False,
            help="Use manual context construction (default: auto)",
        ),
        click.option(
            "--strategy",
            default="default",
            show_default=True,
            help="Strategy to use (see 'llm consortium strategies').",
        ),
        click.option(
            "--strategy-param",
            "strategy_params",
            multiple=True,
            help="Parameters for the strategy, format KEY=VALUE. Can be provided multiple times.",
        ),
        click.option(
            "--embedding-backend",
            type=click.Choice(list(EMBEDDING_BACKENDS), case_sensitive=False),
            help="Embedding backend for the semantic strategy.",
        ),
        click.option(
            "--embedding-model",
            help="Embedding model name (for the llm backend: any 'llm embed-models' id or alias).",
        ),
        click.option(
            "--clustering-algorithm",
            type=click.Choice(list(CLUSTERING_ALGORITHMS), case_sensitive=False),
            help="Semantic clustering algorithm to use.",
        ),
        click.option(
            "--cluster-eps",
            type=float,
            default=0.5,
            show_default=True,
            help="Clustering neighbourhood radius, on the (1 - cos)/2 distance scale.",
        ),
        click.option(
            "--cluster-min-samples",
            type=int,
            default=2,
            show_default=True,
            help="Minimum points required to form a semantic cluster.",
        ),
        click.option(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds allowed per member or arbiter call.",
        ),
        click.option(
            "--retries",
            type=int,
            default=DEFAULT_RETRIES,
            show_default=True,
            help="Retries for transient failures (429, 5xx, timeouts).",
        ),
        click.option(
            "--min-responses",
            type=int,
            default=1,
            show_default=True,
            help="Members that must answer for an iteration to go on.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def config_from_options(
    *,
    models: tuple[str, ...],
    count: int,
    arbiter: str | None,
    confidence_threshold: float,
    max_iterations: int,
    min_iterations: int,
    system_prompt: str | None,
    judging_method: str,
    manual_context: bool,
    strategy: str,
    strategy_params: tuple[str, ...],
    embedding_backend: str | None,
    embedding_model: str | None,
    clustering_algorithm: str | None,
    cluster_eps: float,
    cluster_min_samples: int,
    timeout: float,
    retries: int,
    min_responses: int,
    require_arbiter: bool = True,
) -> ConsortiumConfig:
    from .config import ConsortiumConfig
    from .specs import parse_models
    from .strategies import get_strategy_class

    if not models:
        raise ConfigError("Missing option '-m' / '--model': give at least one member model.")
    if require_arbiter and not arbiter:
        raise ConfigError("Missing option '--arbiter': give the model that judges the answers.")
    params = parse_strategy_params(strategy_params)
    declared = get_strategy_class(strategy).declared_params() or ()
    clustering = {
        "clustering_algorithm": clustering_algorithm.lower() if clustering_algorithm else None,
        "eps": cluster_eps,
        "min_samples": cluster_min_samples,
    }
    for key, value in clustering.items():
        # As the original: --clustering-algorithm stores all three, whatever
        # the strategy (one that does not use them is reported at save).
        wanted = key in declared or clustering_algorithm is not None
        if wanted and key not in params and value is not None:
            params[key] = value
    return ConsortiumConfig(
        models=parse_models(models, count),
        arbiter=arbiter,
        confidence_threshold=confidence_threshold,
        max_iterations=max_iterations,
        minimum_iterations=min_iterations,
        system_prompt=system_prompt,
        judging_method=judging_method,
        manual_context=manual_context,
        strategy=strategy,
        strategy_params=params,
        embedding_backend=embedding_backend,
        embedding_model=embedding_model,
        timeout=timeout,
        retries=retries,
        min_responses=min_responses,
    )


def installed_model_names() -> dict[str, str]:
    """Every id and alias of an installed model that is not a saved
    consortium, mapped to that model's id."""
    from .model import ConsortiumModel
    from .resolve import registry

    names: dict[str, str] = {}
    for entry in registry().entries:
        if isinstance(entry.model, ConsortiumModel):
            continue
        for name in [entry.model.model_id, *entry.aliases]:
            names.setdefault(name, entry.model.model_id)
    return names


def check_name(name: str) -> None:
    """A consortium name must be callable (``llm -m NAME``), printable, and
    not the id or alias of a real model."""
    if not name.strip():
        raise ConfigError("A consortium name cannot be empty")
    if printable(name) != name:
        raise ConfigError("A consortium name cannot contain control characters")
    model_id = installed_model_names().get(name)
    if model_id is not None:
        raise ConfigError(
            f"'{name}' is already the id or an alias of the model "
            f"'{model_id}'; choose another consortium name"
        )


def warn_shadowed(names: list[str]) -> None:
    """A model installed after a consortium was saved may take its name:
    say so, and which one ``llm -m NAME`` now runs."""
    from .model import ConsortiumModel
    from .resolve import registry

    installed = installed_model_names()
    for name in names:
        if name not in installed:
            continue
        runs = registry().models.get(name)
        winner = "the consortium" if isinstance(runs, ConsortiumModel) else f"the model '{installed[name]}'"
        safe_echo(
            f"Warning: the saved consortium '{name}' has the same name as the installed model "
            f"'{installed[name]}'; 'llm -m {name}' runs {winner}. Save the consortium under "
            "another name and remove this one.",
            err=True,
        )


def warn_unknown_models(config: ConsortiumConfig, saved_names: set[str]) -> None:
    from .resolve import get_models

    names = [*config.models, *([config.arbiter] if config.arbiter else [])]
    _, missing = get_models(name for name in names if name not in saved_names)
    for model_id in missing:
        safe_echo(
            f"Warning: model '{model_id}' is not installed; runs will fail until it is "
            "(see 'llm models')",
            err=True,
        )


def warn_missing_extras(name: str, config: ConsortiumConfig) -> None:
    """Warn when the embedding backend a consortium was saved with cannot be
    used here yet (its runs would fail at start)."""
    if not config.embedding_backend:
        return
    from .embeddings import EXTRA_INSTALL_HINT, missing_packages

    algorithm = (config.strategy_params or {}).get("clustering_algorithm")
    missing = missing_packages(config.embedding_backend, algorithm)
    if missing:
        click.echo(
            f"Warning: the {config.embedding_backend} embedding backend needs "
            f"{', '.join(missing)}; runs of '{name}' will fail until it is installed: "
            f"{EXTRA_INSTALL_HINT}",
            err=True,
        )


def save_config(name: str, config: ConsortiumConfig) -> None:
    """Validate a new consortium against the models and saved consortia, then save it."""
    from .saved import check_no_cycle, load_configs
    from .db import shared_store

    store = shared_store()
    others = {key: value for key, value in load_configs(store).items() if key != name}
    check_name(name)
    check_no_cycle(name, config, others)
    warn_unknown_models(config, set(others) | {name})
    warn_missing_extras(name, config)
    data = config.to_dict()
    data.pop("created_at", None)
    store.save_config(name, data)


def report_unused_params(config: ConsortiumConfig) -> None:
    """One line on stderr naming strategy parameters the strategy does not
    use (kept in the config as given, as the original kept any parameter)."""
    from .strategies import get_strategy_class

    unused = get_strategy_class(config.strategy).undeclared_params(config.strategy_params)
    if unused:
        click.echo(
            f"Note: strategy '{config.strategy}' does not use parameter(s) "
            f"{', '.join(unused)}; kept as given",
            err=True,
        )


def print_config(name: str, config: ConsortiumConfig) -> None:
    """The original plugin's configuration listing."""
    echo = safe_echo
    echo(f"Name: {name}")
    if config.created_at:
        echo(f"  Created: {config.created_at}")
    echo(f"  Strategy: {config.strategy or 'default'}")
    if config.strategy_params:
        params = ", ".join(f"{key}={value}" for key, value in config.strategy_params.items())
        echo(f"  Strategy Params: {params}")
    echo("  Models: " + ", ".join(f"{model}:{count}" for model, count in config.models.items()))
    echo(f"  Arbiter: {config.arbiter}")
    iterations = (
        str(config.max_iterations)
        if config.minimum_iterations == config.max_iterations
        else f"{config.minimum_iterations}-{config.max_iterations}"
    )
    echo(f"  Threshold: {config.confidence_threshold} | Iterations: {iterations}")
    if config.category:
        echo(f"  Category: {config.category}")
    context = "Manual" if config.manual_context else "Auto"
    echo(f"  Judging: {config.judging_method} | Context: {context}")
    system = config.system_prompt or "Default"
    if len(system) > 60:
        system = system[:57] + "..."
    echo(f"  System Prompt: {system}")
    if config.embedding_backend:
        echo(f"  Embedding: {config.embedding_backend} ({config.embedding_model or 'default'})")
    echo(f"  Timeout: {config.timeout:g}s | Retries: {config.retries} | Min responses: {config.min_responses}")


def config_json(name: str, config: ConsortiumConfig) -> dict[str, Any]:
    return {"name": name, **config.to_dict()}


def register(cli: click.Group, *more: Callable[[click.Group], None]) -> None:
    """Add ``llm consortium``; ``more`` add further commands to it (the
    report and run commands, which import this module) when it is built."""

    @cli.group(cls=ConsortiumGroup)
    def consortium():
        """Commands for managing and running model consortiums

        \b
        Example usage:
            llm consortium save my-team -m gpt-4o-mini:2 -m claude-3-5-haiku --arbiter gpt-4o
            llm -m my-team "What causes the seasons?"
            llm consortium runs
        """

    assert isinstance(consortium, ConsortiumGroup)
    consortium.more_commands = more


def add_commands(consortium: click.Group) -> None:
    @consortium.command(name="save")
    @click.argument("name")
    @config_options
    @friendly_errors
    def save_command(name, **options):
        """Save a consortium configuration to be used as a model.

        \b
        Example usage:
            llm consortium save my-team -m gpt-4o-mini:2 -m claude-3-5-haiku \\
                --arbiter gpt-4o --confidence-threshold 0.9 --max-iterations 4
            llm -m my-team "Explain quantum tunnelling"
        """
        config = config_from_options(**options)
        save_config(name, config)
        report_unused_params(config)
        safe_echo(f"Consortium configuration '{name}' saved.")
        safe_echo(f'You can now use it like: llm -m {name} "Your prompt here"')

    @consortium.command(name="list")
    @click.option("--json", "json_output", is_flag=True, help="Output as JSON")
    @friendly_errors
    def list_command(json_output):
        """List all saved consortium configurations, newest first.

        \b
        Example usage:
            llm consortium list
            llm consortium list --json
        """
        from .saved import load_configs
        from .db import shared_store

        configs = load_configs(shared_store())
        warn_shadowed(list(configs))
        if json_output:
            safe_echo(json_dumps([config_json(n, c) for n, c in configs.items()], indent=2))
            return
        if not configs:
            safe_echo("No saved consortiums found.")
            return
        safe_echo("Available saved consortiums:\n")
        for name, config in configs.items():
            print_config(name, config)
            safe_echo()

    @consortium.command(name="info")
    @click.argument("name")
    @click.option("--json", "json_output", is_flag=True, help="Output as JSON")
    @friendly_errors
    def info_command(name, json_output):
        """Show detailed configuration for a specific consortium.

        \b
        Example usage:
            llm consortium info my-team
            llm consortium info my-team --json
        """
        from .saved import parse_config_row
        from .db import shared_store

        try:
            config = parse_config_row(shared_store().config_row(name))
        except ConfigError as ex:  # a stored row, not the user's input
            raise ConsortiumError(f"Saved consortium '{name}' cannot be read: {ex}") from None
        warn_shadowed([name])
        if json_output:
            safe_echo(json_dumps(config_json(name, config), indent=2))
        else:
            print_config(name, config)
            report_unused_params(config)

    @consortium.command(name="remove")
    @click.argument("name")
    @friendly_errors
    def remove_command(name):
        """Remove a saved consortium configuration.

        \b
        Example usage:
            llm consortium remove my-team
        """
        from .db import shared_store

        shared_store().remove_config(name)
        safe_echo(f"Consortium configuration '{name}' removed.")

    @consortium.command(name="strategies")
    @click.option("--json", "json_output", is_flag=True, help="Output as JSON")
    @friendly_errors
    def strategies_command(json_output):
        """List available consortium strategies, what they do and their parameters.

        \b
        Example usage:
            llm consortium strategies
            llm consortium save team -m a -m b --arbiter c \\
                --strategy voting --strategy-param similarity_threshold=0.7
        """
        from .strategies import available_strategies

        described = [{**cls.describe(), "name": name} for name, cls in available_strategies().items()]
        if json_output:
            safe_echo(json_dumps(described, indent=2))
            return
        if not described:
            safe_echo("No consortium strategies are registered.")
            return
        safe_echo("Available consortium strategies:\n")
        for info in described:
            safe_echo(f"Name: {info['name']}")
            safe_echo(f"  Class: {info['class_name']}")
            safe_echo(f"  Description: {info['description']}")
            if info["forced_judging_method"]:
                safe_echo(f"  Judging: always {info['forced_judging_method']}")
            if info["params"]:
                safe_echo("  Parameters:")
                for param in info["params"]:
                    default = param["default"]
                    shown = json.dumps(default) if not isinstance(default, str) else default
                    safe_echo(f"    {param['name']} ({param['type']}, default {shown}): {param['help']}")
            safe_echo()

