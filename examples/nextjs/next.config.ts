import type { NextConfig } from "next";

const nextConfig: NextConfig = {
  // This folder is a project of its own inside the taskapi repository.
  turbopack: { root: __dirname },
};

export default nextConfig;
