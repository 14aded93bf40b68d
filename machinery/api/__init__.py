"""The object model and its vocabulary: what a shoal object is, what it is called, how it is wrong.

Everything here is pure (no I/O, no client) and imports nothing of shoal but itself, so the
API server that enforces the rules and the components that send objects share one copy of
them. Objects travel as plain dicts in Kubernetes' wire form; the pydantic models stay
inside `models` and its callers.

A tour, in the order a reader needs it:

- `resources` — the types shoal serves (group, version, plural, kind, scope, short names,
  subresources) and `resolve("deploy")`: every URL path is built from this one table.
- `errors` — `ApiError` and its subclasses (`NotFound`, `Conflict`, `Invalid`, ...) with
  their field `Cause`s; the server renders them as `Status` objects and the client raises
  them again from one (`from_status`), so both sides catch the same classes.
- `models` — decode, default and validate a wire object (`validate(kind, obj, old=...)`,
  `validate_status`); its own `__init__` is the tour of the model.
- `defaults` — Kubernetes' default values as plain constants (and the imagePullPolicy
  rule): what `models` fills in, and what the controllers and the CLI read for unset fields.
- `names` — name, label and identifier syntax checks with Kubernetes' wording.
- `quantity` — `100m`, `128Mi`: exact `Decimal`s, rounded up to millicores and bytes.
- `selectors` — label and field selectors with Kubernetes' semantics: the string form
  (`?labelSelector=`, `?fieldSelector=`), a structured `LabelSelector` converted (and
  cached) with `selector_from_label_selector`, `Selector.matches(labels)`, and the
  canonical string kubectl prints.
- `objects` — helpers over wire dicts (keys, owner references, conditions, pod readiness
  and availability); cached objects are shared, `thaw()` gives a copy to edit.
- `times` — RFC 3339 on the wire, float epoch seconds in code: the one place that formats
  and parses them.
- `printing` — kubectl's columns and cells per kind (pod STATUS, RESTARTS, AGE...): the API
  server's Tables and shoal's CLI print from this one table.
- `podtemplate` — when two pod templates are the same (Kubernetes' EqualIgnoreHash), the
  new ReplicaSet of a template, and the pod-template-hash / revision names: the Deployment
  controller and the CLI decide by this one rule.
- `deletion` — DeleteOptions, the finalizers a propagation policy leaves (`orphan`,
  `foregroundDeletion`) and what becomes of a dependent: the API server's collector and the
  controllers' garbage collector decide by these rules.
"""
