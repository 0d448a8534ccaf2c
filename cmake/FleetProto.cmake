# fleet_proto_library(NAME PROTO [GRPC] [DEPS libs...]): one library per .proto file, with
# generated C++ (and gRPC stubs when GRPC is given) under the build tree.
find_program(FLEET_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

function(fleet_proto_library name proto)
  cmake_parse_arguments(ARG "GRPC" "" "DEPS" ${ARGN})
  get_filename_component(stem ${proto} NAME_WE)
  get_filename_component(rel_dir ${proto} DIRECTORY)
  set(out_dir ${PROJECT_BINARY_DIR}/proto_gen)
  set(base ${out_dir}/${rel_dir}/${stem})
  set(outputs ${base}.pb.cc ${base}.pb.h)
  set(plugin_args)
  if(ARG_GRPC)
    list(APPEND outputs ${base}.grpc.pb.cc ${base}.grpc.pb.h)
    set(plugin_args --grpc_out=${out_dir} --plugin=protoc-gen-grpc=${FLEET_GRPC_CPP_PLUGIN})
  endif()
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND protobuf::protoc --proto_path=${PROJECT_SOURCE_DIR}/proto --cpp_out=${out_dir}
            ${plugin_args} ${PROJECT_SOURCE_DIR}/proto/${proto}
    DEPENDS ${PROJECT_SOURCE_DIR}/proto/${proto} protobuf::protoc
    COMMENT "protoc ${proto}")
  add_library(${name} STATIC ${outputs})
  # Generated code is not ours to keep warning-free.
  target_compile_options(${name} PRIVATE -w)
  target_include_directories(${name} PUBLIC ${out_dir})
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf ${ARG_DEPS})
  if(ARG_GRPC)
    target_link_libraries(${name} PUBLIC gRPC::grpc++)
  endif()
endfunction()
