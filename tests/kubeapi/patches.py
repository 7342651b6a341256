"""
Patch flavours of the Kubernetes API and the list selectors, as pure functions.

* JSON merge patch (RFC 7386): ``application/merge-patch+json`` (kopf, kubectl for CRs).
* An approximation of the strategic merge patch: ``application/strategic-merge-patch+json``
  (kubectl for built-in types). It is a JSON merge patch that also understands the directives
  kubectl emits: ``$setElementOrder/<list>`` (it reveals the merge key and the final order,
  so the lists of dicts are merged by that key), ``$deleteFromPrimitiveList/<list>``,
  ``$patch: delete|replace`` and ``$retainKeys``. No Go-struct schemas are involved:
  a list without ``$setElementOrder`` is replaced as a whole.
* JSON patch (RFC 6902): ``application/json-patch+json`` — done by ``jsonpatch`` (a kmock dependency).
"""
import copy
import re
from collections.abc import Mapping
from typing import Any

import jsonpatch
import jsonpointer


class PatchError(Exception):
    """A patch cannot be applied: a JSON-patch ``test`` failed, a path is missing, etc."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts are merged recursively, ``None`` removes a key, the rest replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, patch: list[Any]) -> Any:
    try:
        return jsonpatch.apply_patch(copy.deepcopy(target), patch)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, TypeError) as e:
        raise PatchError(str(e)) from e


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return _strip_directives(patch)
    if patch.get('$patch') == 'replace':
        return _strip_directives(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if key.startswith('$'):
            continue
        order = patch.get(f'$setElementOrder/{key}')
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and value.get('$patch') == 'delete':
            result.pop(key, None)
        elif isinstance(value, list) and order is not None:
            result[key] = _merge_list(result.get(key) or [], value, order)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    for directive, value in patch.items():
        if directive.startswith('$deleteFromPrimitiveList/'):
            key = directive.split('/', 1)[1]
            result[key] = [item for item in result.get(key) or [] if item not in value]
        elif directive.startswith('$setElementOrder/'):
            key = directive.split('/', 1)[1]
            if key not in patch and isinstance(result.get(key), list):
                result[key] = _merge_list(result[key], [], value)
    if isinstance(patch.get('$retainKeys'), list):
        result = {key: val for key, val in result.items() if key in patch['$retainKeys']}
    return result


def _merge_list(current: list[Any], patch: list[Any], order: list[Any]) -> list[Any]:
    merge_keys = {key for item in order if isinstance(item, Mapping) for key in item}
    if len(merge_keys) != 1 or not all(isinstance(item, Mapping) for item in order):
        # A list of primitives (e.g. finalizers): the order is the full final list.
        return list(order) + [item for item in patch if item not in order]
    [mk] = merge_keys
    existing = {item.get(mk): item for item in current if isinstance(item, Mapping)}
    patches = {item.get(mk): item for item in patch if isinstance(item, Mapping)}
    result = []
    for item in order:
        key = item[mk]
        if patches.get(key, {}).get('$patch') == 'delete':
            continue
        result.append(strategic_merge_patch(existing.get(key, {}), patches.get(key, {})))
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith('$')}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


#
# Selectors: ?labelSelector=… & ?fieldSelector=… (the most common forms).
#
_LABEL_TERM = re.compile(
    r'^\s*(?P<neg>!)?\s*(?P<key>[^\s!=,()]+)\s*'
    r'(?:(?P<op>==|=|!=)\s*(?P<val>[^\s,()]*)|\s(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\))?\s*$'
)


def _split_terms(selector: str) -> list[str]:
    # Split by commas, but not inside the parentheses of set-based terms: "a in (x,y),b".
    return [term for term in re.split(r',(?![^(]*\))', selector) if term.strip()]


def match_labels(selector: str | None, labels: Mapping[str, str]) -> bool:
    for term in _split_terms(selector or ''):
        m = _LABEL_TERM.match(term)
        if m is None:
            raise ValueError(f"unable to parse requirement: {term!r}")
        key, present = m['key'], m['key'] in labels
        if m['neg']:
            ok = not present
        elif m['op'] in ('=', '=='):
            ok = present and labels[key] == m['val']
        elif m['op'] == '!=':
            ok = not present or labels[key] != m['val']
        elif m['setop']:
            values = {v.strip() for v in m['vals'].split(',')}
            ok = (present and labels[key] in values) if m['setop'] == 'in' else not (present and labels[key] in values)
        else:
            ok = present
        if not ok:
            return False
    return True


def match_fields(selector: str | None, obj: Mapping[str, Any]) -> bool:
    for term in _split_terms(selector or ''):
        m = re.match(r'^\s*([^!=\s]+)\s*(==|=|!=)\s*(.*?)\s*$', term)
        if m is None:
            raise ValueError(f"invalid field selector: {term!r}")
        path, op, expected = m.groups()
        value: Any = obj
        for part in path.split('.'):
            value = value.get(part) if isinstance(value, Mapping) else None
        actual = '' if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        if (actual == expected) != (op != '!='):
            return False
    return True
