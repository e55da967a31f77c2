# VG_SANITIZE=address,undefined builds everything with ASan+UBSan (the CI preset).
if(VG_SANITIZE)
  set(_san -fsanitize=${VG_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_compile_options(${_san})
  add_link_options(${_san})
endif()
