# epserve_target_options(<target>): warnings (and -Werror) and sanitizers for
# epserve's own code. Generated code and third-party headers are not affected.
function(epserve_target_options target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wnon-virtual-dtor
                              -Wno-missing-field-initializers>
    # clang has no -Wshadow=local
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wshadow=local>)
  if(EPSERVE_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>
                                             $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>)
  endif()
  if(EPSERVE_SANITIZE)
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${EPSERVE_SANITIZE} -fno-sanitize-recover=all
                                -fno-omit-frame-pointer>)
    target_link_options(${target} PRIVATE -fsanitize=${EPSERVE_SANITIZE})
  endif()
endfunction()

# Sanitizers must also be on the link line of every executable that links an
# instrumented library.
function(epserve_executable target)
  add_executable(${target} ${ARGN})
  epserve_target_options(${target})
endfunction()
