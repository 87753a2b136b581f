-- JaSMIn annual report (seed 000, figure 1): registrants by disease group (15 groups).
-- 先天代謝異常症患者登録制度（JaSMIn）年次報告: 疾患群別登録者数
-- Names of the groups: table jasmin_disease (group_ja, group_en), joined by the report.
SELECT disease_group, COUNT(DISTINCT pid) AS registrants
FROM jasmin_registrant
GROUP BY disease_group
ORDER BY disease_group
