"""Pure decisions of the operator: what to create, change and report, as functions of observed state.

Handlers observe, call these, and apply the result; nothing here does I/O, so all of it is unit tested.
"""
