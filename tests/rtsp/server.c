/* GStreamer's RTSP server (libgstrtspserver, Debian's libgstrtspserver-1.0-dev) serving one GStreamer pipeline
 * at rtsp://127.0.0.1:PORT/camera, for the tests of the RTSP camera source (tests/rtsp/mod.rs builds it).
 *
 *   rtsp-test-server PORT PIPELINE [USERNAME PASSWORD]
 *
 * PORT 0 takes a free port. Prints "port N" once it listens. With USERNAME and PASSWORD, clients must give them
 * (HTTP basic authentication, as IP cameras ask). With RTSP_TEST_UDP_ONLY=1 in the environment it refuses to
 * stream over TCP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <gst/gst.h>
#include <gst/rtsp-server/rtsp-server.h>

int main(int argc, char **argv) {
  gst_init(&argc, &argv);
  if (argc != 3 && argc != 5) {
    fprintf(stderr, "usage: %s PORT PIPELINE [USERNAME PASSWORD]\n", argv[0]);
    return 2;
  }
  GMainLoop *loop = g_main_loop_new(NULL, FALSE);
  GstRTSPServer *server = gst_rtsp_server_new();
  gst_rtsp_server_set_address(server, "127.0.0.1");
  gst_rtsp_server_set_service(server, argv[1]);
  GstRTSPMediaFactory *factory = gst_rtsp_media_factory_new();
  gst_rtsp_media_factory_set_launch(factory, argv[2]);
  gst_rtsp_media_factory_set_shared(factory, TRUE);
  const char *udp_only = getenv("RTSP_TEST_UDP_ONLY");
  if (udp_only != NULL && strcmp(udp_only, "1") == 0) {
    gst_rtsp_media_factory_set_protocols(factory, GST_RTSP_LOWER_TRANS_UDP);
  }
  if (argc == 5) {
    GstRTSPAuth *auth = gst_rtsp_auth_new();
    GstRTSPToken *token =
        gst_rtsp_token_new(GST_RTSP_TOKEN_MEDIA_FACTORY_ROLE, G_TYPE_STRING, "viewer", NULL);
    gchar *basic = gst_rtsp_auth_make_basic(argv[3], argv[4]);
    gst_rtsp_auth_add_basic(auth, basic, token);
    g_free(basic);
    gst_rtsp_token_unref(token);
    gst_rtsp_server_set_auth(server, auth);
    g_object_unref(auth);
    gst_rtsp_media_factory_add_role(factory, "viewer", GST_RTSP_PERM_MEDIA_FACTORY_ACCESS, G_TYPE_BOOLEAN,
                                    TRUE, GST_RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, G_TYPE_BOOLEAN, TRUE, NULL);
  }
  GstRTSPMountPoints *mounts = gst_rtsp_server_get_mount_points(server);
  gst_rtsp_mount_points_add_factory(mounts, "/camera", factory);
  g_object_unref(mounts);
  if (gst_rtsp_server_attach(server, NULL) == 0) {
    fprintf(stderr, "rtsp-test-server: cannot listen on port %s\n", argv[1]);
    return 1;
  }
  printf("port %d\n", gst_rtsp_server_get_bound_port(server));
  fflush(stdout);
  g_main_loop_run(loop);
  return 0;
}
