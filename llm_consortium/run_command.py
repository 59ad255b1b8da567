"""``llm consortium run``: a one-off consortium, nothing saved but the run."""

from __future__ import annotations

import sys

import click

from .cli import config_options, friendly_errors


def register(consortium: click.Group) -> None:
    @consortium.command(name="run")
    @click.argument("prompt", required=False)
    @config_options
    @click.option("--save", "save_as", metavar="NAME", help="Also save this configuration as NAME")
    @click.option("--no-stream", is_flag=True, help="Print the answer when the run ends")
    @friendly_errors
    def run_command(prompt, save_as, no_stream, **options):
        """Run a one-off consortium on PROMPT (read from stdin when omitted).

        \b
        Example usage:
            llm consortium run "Is 1009 prime?" -m gpt-4o-mini:3 --arbiter gpt-4o
            cat question.txt | llm consortium run -m a -m b --arbiter c --save my-team
        """
        from .cli import config_from_options, save_config
        from .errors import ConfigError
        from .events import SynthesisDelta
        from .model import sigterm_as_interrupt
        from .orchestrator import ConsortiumOrchestrator
        from .progress import Reporter

        config = config_from_options(**options)
        if prompt is None:
            if sys.stdin.isatty():
                raise ConfigError("No prompt given: pass PROMPT or pipe it on stdin.")
            prompt = sys.stdin.read()
        if not prompt.strip():
            raise ConfigError("The prompt is empty.")
        if save_as:
            save_config(save_as, config)
            click.echo(f"Consortium configuration '{save_as}' saved.", err=True)
        run = ConsortiumOrchestrator(config, config_name=save_as).run(
            prompt, stream_final=not no_stream
        )
        report = Reporter()
        try:
            with sigterm_as_interrupt():
                for event in run:
                    report(event)
                    if isinstance(event, SynthesisDelta):
                        click.echo(event.text, nl=False)
                        sys.stdout.flush()
        except KeyboardInterrupt:
            report.clear()
            click.echo(f"\nInterrupted; run {run.run_id} recorded as interrupted.", err=True)
            sys.exit(130)
        finally:
            report.clear()
        click.echo()
