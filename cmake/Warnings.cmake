# vg_target_warnings(tgt): the one list of warnings for the project's own targets (STYLE.md).
include(CheckCCompilerFlag)
set(VG_WARNING_FLAGS
  -Wall -Wextra -Wshadow -Wundef -Wwrite-strings -Wstrict-prototypes -Wmissing-prototypes
  -Wold-style-definition -Wredundant-decls -Wformat=2 -Wvla -Wno-unused-parameter)
set(_vg_flags "")
foreach(flag IN LISTS VG_WARNING_FLAGS)
  string(MAKE_C_IDENTIFIER "HAVE${flag}" var)
  check_c_compiler_flag(${flag} ${var})
  if(${var})
    list(APPEND _vg_flags ${flag})
  endif()
endforeach()
if(VG_WERROR)
  list(APPEND _vg_flags -Werror)
endif()
function(vg_target_warnings tgt)
  target_compile_options(${tgt} PRIVATE ${_vg_flags})
endfunction()
