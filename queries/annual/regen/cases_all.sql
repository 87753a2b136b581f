-- Registered cases of the fiscal year, all products (patients treated in the year).
-- 当該年度の登録症例数（全製品、当該年度に使用された患者）
SELECT COUNT(DISTINCT pid) AS n
FROM regen_treatment
WHERE fiscal_year = {fy}
