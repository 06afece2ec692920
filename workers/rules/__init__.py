"""The rule engine: compile AlertRule specs and evaluate events in event time. Pure, no I/O.

    compile_rule(name, spec, channels=None) -> CompiledRule   (RuleCompileError with every path)
    compile_expression(text)                 -> CelProgram     (the CEL subset, see cel.py)
"""

from alertpipe.workers.rules.cel import MISSING, CelError, CelProgram, compile_expression
from alertpipe.workers.rules.compiler import CompiledRule, compile_rule, rule_from_manifest

__all__ = [
    "MISSING",
    "CelError",
    "CelProgram",
    "CompiledRule",
    "compile_expression",
    "compile_rule",
    "rule_from_manifest",
]
