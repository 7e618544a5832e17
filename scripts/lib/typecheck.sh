# Shared by scripts/test: mypy --strict over herald/, the services and the Python client.
# The services live in services/ but install as herald.services (pyproject's package-dir),
# which mypy cannot follow through an editable install: it checks a staging folder of
# symlinks laid out as the installed package, so errors name herald/services/<path> for
# services/<path>.
typecheck() {
  local root=$PWD stage rc=0
  stage=$(mktemp -d)
  mkdir "$stage/herald"
  for entry in herald/*; do ln -s "$root/$entry" "$stage/herald/"; done
  ln -s "$root/services" "$stage/herald/services"
  (cd "$stage" && "$root/.venv/bin/mypy" --strict --cache-dir "$root/.mypy_cache" -p herald) || rc=$?
  rm -rf "$stage"
  [ "$rc" = 0 ] || return "$rc"
  .venv/bin/mypy --strict --cache-dir .mypy_cache clients/python/src/herald_client
}
