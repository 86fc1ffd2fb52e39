# Writes OUTPUT (a header defining EPSERVE_GIT_DESCRIBE) from `git describe`
# of SOURCE_DIR, touching it only when the text changes. Run at every build
# (common/CMakeLists.txt), so `--version` names the commit that was built.
# Outside a git checkout (a source tarball) the version says "no git".
find_package(Git QUIET)
set(describe "no git")
if(GIT_FOUND AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(
    COMMAND "${GIT_EXECUTABLE}" -C "${SOURCE_DIR}" describe --always --dirty --abbrev=10
    OUTPUT_VARIABLE out OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND NOT out STREQUAL "")
    set(describe "git ${out}")
  endif()
endif()
set(text "#pragma once\n#define EPSERVE_GIT_DESCRIBE \"${describe}\"\n")
set(old "")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUTPUT}" "${text}")
endif()
